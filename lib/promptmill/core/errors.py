"""The errors the library raises; the command line turns each into one line and an exit status."""


class PromptmillError(Exception):
    """A problem the user can act on, said in one line."""

    exit_code = 1


class BadInput(PromptmillError):
    """An unusable command or input (missing file, wrong option, unknown preset): exit 2."""

    exit_code = 2


class RunStopped(PromptmillError):
    """The run can't go on (no quota left): exit 1, results so far are kept."""
