"""Text normalisation and hashing shared by collecting, cleaning and dedup."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_EDGE_PUNCTUATION = " \t\r\n.,;:!?-_*\"'`"
_WHITESPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """The comparison form of a prompt: NFKC, case-folded, single spaces, no edge punctuation."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.casefold().split()).strip(_EDGE_PUNCTUATION)


def text_hash(text: str) -> int:
    """Signed 64-bit blake2b of a string, small enough for an INTEGER column and its index."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def hash_author(author_id: str | None) -> str | None:
    """A stable pseudonym for an author id: joinable across sources, not reversible to the id."""
    if not author_id:
        return None
    return hashlib.blake2b(f"promptmill-author:{author_id}".encode(), digest_size=10).hexdigest()


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()
