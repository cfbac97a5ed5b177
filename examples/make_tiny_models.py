#!/usr/bin/env python3
"""Write the tiny random models the offline demo uses to examples/models/ (git-ignored).

    python examples/make_tiny_models.py                 # tiny-sd, tiny-blip, tiny-wd14, tiny-clip
    python examples/make_tiny_models.py tiny-wd14       # just one

Each folder loads exactly like its hub counterpart (from_pretrained / model.onnx +
selected_tags.csv); the weights are random, so images and captions are noise.
"""

import sys
from pathlib import Path

from tiny_models import BUILDERS, build_all

MODELS_DIR = Path(__file__).resolve().parent / "models"


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in BUILDERS]
    if unknown:
        print(f"error: unknown model {', '.join(unknown)} (choose from {', '.join(BUILDERS)})", file=sys.stderr)
        return 2
    for name, folder in build_all(MODELS_DIR, argv or None).items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
