"""`python -m promptmill`: the same command as `promptmill`."""

import sys

from promptmill.cli import main

if __name__ == "__main__":
    sys.argv[0] = "promptmill"
    main()
