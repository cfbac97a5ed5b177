"""What goes into a release: the kept items with their text, split and provenance.

Items with no split decision go to ``train``. Missing provenance is written
as a typed placeholder (``""``, ``-1``, ``-1.0``) and never as null, because a
column that is null in one split and typed in another stops the Hub viewer and
``datasets``; for the same reason tags are one comma-separated string (an
empty list has no element type). Prompts are read as a stream: a prompt
release of millions of rows never holds them all.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from promptmill.core.errors import BadInput
from promptmill.core.state import kept_images, kept_prompts, kept_prompts_sql, split_of
from promptmill.core.store import Store

DEFAULT_SPLIT = "train"
SPLIT_ORDER = ("train", "validation", "test")
MAX_STEM_CHARS = 64
HASH_CHARS = 8
NO_OBJECT = "_no_object"

_NOT_SAFE = re.compile(r"[^a-z0-9]+")


def split_sort_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def safe_stem(text: str, sha256: str) -> str:
    """ASCII slug of at most 64 characters plus a short content hash: readable, unique, portable."""
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")
    slug = _NOT_SAFE.sub("-", ascii_text.lower()).strip("-")[:MAX_STEM_CHARS].rstrip("-")
    return f"{slug}-{sha256[:HASH_CHARS]}" if slug else sha256[:HASH_CHARS]


def unique_stems(items: list[dict]) -> list[str]:
    """A safe stem for each image; a clash (same slug, same 8-hex prefix) takes a longer hash."""
    used: set[str] = set()
    stems = []
    for item in items:
        stem = safe_stem(item["text"], item["sha256"])
        chars = HASH_CHARS
        while stem.lower() in used:
            chars += 8
            stem = safe_stem(item["text"], item["sha256"])[: -HASH_CHARS] + item["sha256"][:chars]
        used.add(stem.lower())
        stems.append(stem)
    return stems


def parse_text_from(spec: str) -> list[tuple[str, str | None]]:
    """'prompt', 'caption:KIND', 'label:KIND', or several joined by commas (the first that has text
    wins, e.g. 'prompt,caption:imported') -> [(source, kind), ...]."""
    chain = []
    for part in spec.split(","):
        source, _, kind = part.strip().partition(":")
        if source == "prompt" and not kind:
            chain.append(("prompt", None))
        elif source in ("caption", "label") and kind:
            chain.append((source, kind))
        else:
            raise BadInput(f"--text-from takes prompt, caption:KIND or label:KIND (comma-separated for "
                           f"fallbacks), not {spec!r}")
    return chain


def current_caption_texts(store: Store, kind: str) -> dict[int, str]:
    """image id -> its current caption of KIND: the head of the kind's chain of edits (an edited wd14
    caption is the current wd14 caption); 'edit' means the newest edit of any chain."""
    return dict(store.execute(
        "SELECT image_id, text FROM current_captions WHERE lineage_kind = ? OR kind = ? ORDER BY caption_id",
        (kind, kind)))


def cleaned_prompt_texts(store: Store) -> dict[int, str]:
    """prompt id -> latest cleaned text, for prompts that have one."""
    return {item_id: value for item_id, value in store.execute(
        "SELECT item_id, value FROM decisions WHERE item_type = 'prompt' AND stage = 'clean' "
        "AND verdict = 'keep' AND value IS NOT NULL ORDER BY id")}


def image_items(store: Store, text_from: str = "prompt", splits: tuple[str, ...] = ()) -> list[dict]:
    """Every kept, readable image with its text, split and provenance, in image id order."""
    chain = parse_text_from(text_from)
    formats = {row[0]: row[1:] for row in store.execute("SELECT id, format, width, height FROM images")}
    generations = {}
    for row in store.execute("SELECT image_id, prompt_id, prompt_text, model, seed, steps, guidance "
                             "FROM generations ORDER BY id DESC"):
        generations[row[0]] = row  # the first generation of an image wins
    origins = {}
    for row in store.execute("SELECT o.image_id, s.kind, o.prompt_id FROM image_origins o "
                             "JOIN sources s ON s.id = o.source_id ORDER BY o.id DESC"):
        origins[row[0]] = row
    prompt_texts = dict(store.execute("SELECT id, text FROM prompts WHERE id IN "
                                      "(SELECT prompt_id FROM image_origins WHERE prompt_id IS NOT NULL)"))
    prompt_texts.update(cleaned_prompt_texts(store))
    clip = {row[0]: row[1] for row in store.execute(
        "SELECT image_id, value FROM scores WHERE kind = 'clip' ORDER BY id")}
    tags = _latest_tags(store)
    descriptions = _descriptions(store)
    captions = {kind: current_caption_texts(store, kind) for source, kind in chain if source == "caption"}
    image_labels: dict[str, dict] = {}
    prompt_labels: dict[str, dict] = {}
    for source, kind in chain:
        if source != "label":
            continue
        image_labels[kind], prompt_labels[kind] = {}, {}
        for prompt_id, image_id, text in store.execute(
                "SELECT prompt_id, image_id, text FROM labels WHERE kind = ? ORDER BY id", (kind,)):
            if image_id is not None:
                image_labels[kind][image_id] = text
            elif prompt_id is not None:
                prompt_labels[kind][prompt_id] = text

    def text_of(image_id: int, prompt_id: int | None, prompt_text: str) -> str:
        for source, kind in chain:
            if source == "prompt":
                text = prompt_text
            elif source == "caption":
                text = captions[kind].get(image_id, "")
            else:
                text = image_labels[kind].get(image_id) or prompt_labels[kind].get(prompt_id, "")
            if text:
                return text
        return ""

    image_splits = split_of(store, "image")
    items = []
    for image_id, sha256, ext in kept_images(store):
        fmt, width, height = formats[image_id]
        if fmt is None:
            continue
        split = image_splits.get(image_id) or DEFAULT_SPLIT
        if splits and split not in splits:
            continue
        generation = generations.get(image_id)
        origin = origins.get(image_id)
        if generation:
            prompt_id, prompt_text = generation[1], generation[2]
        else:
            prompt_id = origin[2] if origin else None
            prompt_text = prompt_texts.get(prompt_id, "") if prompt_id else ""
        text = text_of(image_id, prompt_id, prompt_text)
        items.append({
            "image_id": image_id, "sha256": sha256, "ext": ext, "split": split,
            "text": text or "",
            "prompt_id": prompt_id if prompt_id is not None else -1,
            "source_kind": origin[1] if origin else ("generated" if generation else ""),
            "model": (generation[3] if generation else None) or "",
            "seed": generation[4] if generation and generation[4] is not None else -1,
            "steps": generation[5] if generation and generation[5] is not None else -1,
            "guidance": float(generation[6]) if generation and generation[6] is not None else -1.0,
            "clip_score": float(clip[image_id]) if image_id in clip else -1.0,
            "tags": tags.get(image_id, []),
            "description": descriptions.get(prompt_id, "") if prompt_id else "",
            "width": width if width is not None else -1,
            "height": height if height is not None else -1,
        })
    return items


# Columns of an image release, in order, with their one type each (see the module docstring).
IMAGE_COLUMNS = (
    ("text", "string"), ("id", "int64"), ("image_id", "int64"), ("image_sha256", "string"),
    ("prompt_id", "int64"), ("source_kind", "string"), ("model", "string"), ("seed", "int64"),
    ("steps", "int64"), ("guidance", "float64"), ("clip_score", "float64"), ("tags", "string"),
    ("description", "string"), ("width", "int64"), ("height", "int64"),
)


def metadata_row(item: dict, release_id_number: int) -> dict:
    """The provenance columns of one image, typed as IMAGE_COLUMNS says."""
    values = {**item, "id": release_id_number, "image_sha256": item["sha256"], "tags": ", ".join(item["tags"])}
    return {name: values[name] for name, _ in IMAGE_COLUMNS}


def _latest_tags(store: Store) -> dict[int, list[str]]:
    """image id -> tags of its newest tagged caption, in the tagger's order."""
    newest = dict(store.execute("SELECT c.image_id, max(c.id) FROM captions c "
                                "WHERE EXISTS (SELECT 1 FROM tags t WHERE t.caption_id = c.id) GROUP BY c.image_id"))
    wanted = set(newest.values())
    by_caption: dict[int, list[str]] = {}
    for caption_id, tag in store.execute(
            "SELECT caption_id, tag FROM tags ORDER BY caption_id, position IS NULL, position, score DESC, tag"):
        if caption_id in wanted:
            by_caption.setdefault(caption_id, []).append(tag)
    return {image_id: by_caption.get(caption_id, []) for image_id, caption_id in newest.items()}


def _descriptions(store: Store) -> dict[int, str]:
    """prompt id -> its newest description label, leaving out prompts labelled as having no object."""
    no_object = {row[0] for row in store.execute(
        "SELECT prompt_id FROM labels WHERE kind = 'no_object' AND prompt_id IS NOT NULL")}
    found = {}
    for prompt_id, text in store.execute("SELECT prompt_id, text FROM labels WHERE kind = 'description' "
                                         "AND prompt_id IS NOT NULL ORDER BY id"):
        found[prompt_id] = text
    return {pid: text for pid, text in found.items()
            if pid not in no_object and text.strip() and text.strip() != NO_OBJECT}


def pair_items(store: Store) -> list[dict]:
    """Description -> prompt pairs of kept prompts, in prompt id order."""
    descriptions = _descriptions(store)
    prompt_splits = split_of(store, "prompt")
    kinds = dict(store.execute("SELECT id, kind FROM sources"))
    models = {row[0]: row[1] for row in store.execute(
        "SELECT prompt_id, model FROM labels WHERE kind = 'description' AND prompt_id IS NOT NULL ORDER BY id")}
    items = []
    for prompt_id, source_id, text in kept_prompts(store):
        if prompt_id not in descriptions:
            continue
        items.append({"prompt_id": prompt_id, "split": prompt_splits.get(prompt_id) or DEFAULT_SPLIT,
                      "description": descriptions[prompt_id], "prompt": text,
                      "source_kind": kinds.get(source_id, ""), "label_model": models.get(prompt_id) or ""})
    return items


def _latest_split_sql(item_type: str) -> str:
    return (f"SELECT item_id, value FROM decisions WHERE id IN (SELECT max(id) FROM decisions "
            f"WHERE item_type = '{item_type}' AND stage = 'split' GROUP BY item_id)")


def prompt_items(store: Store, split: str | None = None) -> Iterator[dict]:
    """Every kept prompt (cleaned text) with its source and split, in prompt id order, one row at a time."""
    kept = kept_prompts_sql(columns="p.id, s.kind, s.uri, COALESCE(cleaned.value, p.text) AS text")
    rows = store.conn.execute(
        f"SELECT k.id, k.kind, k.uri, k.text, COALESCE(sp.value, '{DEFAULT_SPLIT}') AS split FROM ({kept}) k "
        f"LEFT JOIN ({_latest_split_sql('prompt')}) sp ON sp.item_id = k.id "
        f"WHERE :split IS NULL OR COALESCE(sp.value, '{DEFAULT_SPLIT}') = :split ORDER BY k.id", {"split": split})
    for prompt_id, kind, uri, text, item_split in rows:
        yield {"prompt_id": prompt_id, "split": item_split, "text": text, "source_kind": kind or "",
               "source_uri": uri or ""}
