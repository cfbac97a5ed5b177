"""Rebuild the `prompt_state` and `image_state` views from promptmill.core.state, the one definition of "kept"."""

from promptmill.core import state


def statements() -> list[str]:
    return ["DROP VIEW IF EXISTS prompt_state", state.prompt_state_view_sql(),
            "DROP VIEW IF EXISTS image_state", state.image_state_view_sql()]
