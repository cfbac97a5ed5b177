"""What a caption set looks like before training on it: tags, lengths, trigger coverage, sizes.

Lengths are in CLIP tokens, estimated without the CLIP vocabulary (it is not
available offline): every run of letters/digits and every punctuation mark
counts as one token, plus the start and end markers. CLIP's byte-pair encoding
only ever splits a word into more pieces, so the estimate is a lower bound: a
caption flagged as over 77 tokens really is truncated by a 77-token text encoder.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter

from promptmill.caption.edit import chain_scope, split_tags, tag_key
from promptmill.core.state import kept_images_sql
from promptmill.core.store import Store

_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)
SPECIAL_TOKENS = 2
SHORT, CLIP_LIMIT, LONG = 20, 77, 200
LENGTH_BINS = (0, 20, 40, 78, 201)


def clip_token_estimate(text: str) -> int:
    return len(_TOKEN.findall(text)) + SPECIAL_TOKENS


def length_bin(tokens: int) -> str:
    lower = max(edge for edge in LENGTH_BINS if edge <= tokens)
    higher = [edge for edge in LENGTH_BINS if edge > tokens]
    return f"{lower}-{higher[0] - 1}" if higher else f"{lower}+"


def current_captions(store: Store, kinds: tuple[str, ...] = (), source_ids: list[int] | None = None) -> list[dict]:
    """The current caption of each kept image for each lineage kind in scope, with the image size."""
    where, params = chain_scope("c", kinds, source_ids)
    return store.query(
        f"""WITH kept AS ({kept_images_sql()})
            SELECT c.caption_id, c.image_id, c.lineage_kind, c.text, i.width, i.height
            FROM current_captions c JOIN kept ON kept.id = c.image_id JOIN images i ON i.id = c.image_id
            WHERE {where} ORDER BY c.image_id, c.lineage_kind""",
        params,
    )


def caption_stats(rows: list[dict], trigger: str | None = None, top: int = 30) -> dict:
    """Tag frequency, token lengths with flags, trigger coverage and image resolutions of ROWS."""
    tag_counts: Counter = Counter()
    spelling: dict[str, str] = {}
    lengths = []
    flagged: dict[str, list[int]] = {"under_20": [], "over_77": [], "over_200": []}
    trigger_key = tag_key(trigger) if trigger else None
    covered = 0
    for row in rows:
        keys = set()
        for tag in split_tags(row["text"]):
            key = tag_key(tag)
            spelling.setdefault(key, tag)
            keys.add(key)
        tag_counts.update(keys)
        tokens = clip_token_estimate(row["text"])
        lengths.append(tokens)
        if tokens < SHORT:
            flagged["under_20"].append(row["caption_id"])
        if tokens > CLIP_LIMIT:
            flagged["over_77"].append(row["caption_id"])
        if tokens > LONG:
            flagged["over_200"].append(row["caption_id"])
        covered += bool(trigger_key and trigger_key in keys)
    images = {row["image_id"]: (row["width"], row["height"]) for row in rows}
    resolutions = Counter(f"{w}x{h}" if w and h else "unknown" for w, h in images.values())
    bins = Counter(length_bin(tokens) for tokens in lengths)
    return {
        "captions": len(rows),
        "images": len(images),
        "tag_frequency": [[spelling[key], n] for key, n in tag_counts.most_common(top)],
        "distinct_tags": len(tag_counts),
        "tokens": {
            "method": "estimate: words and punctuation + 2 markers (a lower bound on CLIP BPE tokens)",
            "min": min(lengths, default=0),
            "median": statistics.median(lengths) if lengths else 0,
            "max": max(lengths, default=0),
            "histogram": [[name, bins[name]] for name in _bin_names() if bins[name]],
            "flagged": {name: len(ids) for name, ids in flagged.items()},
            "flagged_caption_ids": {name: ids[:top] for name, ids in flagged.items()},
        },
        "trigger": {"word": trigger, "covered": covered, "of": len(rows)} if trigger else None,
        "resolutions": [[size, n] for size, n in resolutions.most_common(top)],
    }


def _bin_names() -> list[str]:
    return [length_bin(edge) for edge in LENGTH_BINS]


def format_stats(stats: dict) -> str:
    """A plain-text report for the terminal."""
    lines = [f"{stats['captions']:,} captions of {stats['images']:,} images, "
             f"{stats['distinct_tags']:,} distinct tags"]
    tokens = stats["tokens"]
    lines.append(f"CLIP tokens ({tokens['method']}): min {tokens['min']}, median {tokens['median']}, "
                 f"max {tokens['max']}")
    lines += [f"  {name:>8} tokens: {n:,}" for name, n in tokens["histogram"]]
    flags = tokens["flagged"]
    lines.append(f"  flagged: {flags['under_20']:,} under 20, {flags['over_77']:,} over 77, "
                 f"{flags['over_200']:,} over 200")
    if stats["trigger"]:
        trig = stats["trigger"]
        share = trig["covered"] / trig["of"] if trig["of"] else 0
        lines.append(f"trigger {trig['word']!r}: in {trig['covered']:,} of {trig['of']:,} captions ({share:.0%})")
    lines.append("top tags:")
    lines += [f"  {n:>6,}  {tag}" for tag, n in stats["tag_frequency"]]
    lines.append("resolutions:")
    lines += [f"  {n:>6,}  {size}" for size, n in stats["resolutions"]]
    return "\n".join(lines)
