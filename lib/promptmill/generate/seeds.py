"""Seeds that belong to a prompt, not to its place in a run.

An image's seed is a hash of the run's base seed, the prompt id and the image's
index for that prompt, so a resumed, re-batched or sharded run draws the same
noise for the same prompt and makes the same image.
"""

from __future__ import annotations

import hashlib

SEED_RULE = "blake2b-8('{base_seed}:{prompt_id}:{image_index}') & (2**63 - 1)"


def image_seed(base_seed: int, prompt_id: int, image_index: int = 0) -> int:
    """A 63-bit seed (fits SQLite's INTEGER and torch.Generator.manual_seed)."""
    digest = hashlib.blake2b(f"{base_seed}:{prompt_id}:{image_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)
