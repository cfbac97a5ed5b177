"""Rebuild `prompt_state` and `image_state` from promptmill.core.state once it reads a review decision
valued 'clear' (an undone review in the browser) as no review, on databases built before."""

from promptmill.core import state


def statements() -> list[str]:
    return ["DROP VIEW IF EXISTS prompt_state", state.prompt_state_view_sql(),
            "DROP VIEW IF EXISTS image_state", state.image_state_view_sql()]
