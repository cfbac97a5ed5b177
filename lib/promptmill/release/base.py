"""What goes into a release, where it is written, and what was published.

An export selects the kept items with their provenance (:func:`image_items`,
:func:`pair_items`, :func:`prompt_items`), writes them into a staging folder
inside OUT and moves them into place only when every file is complete
(:class:`ExportFolder`), so a killed export never leaves a half-written
release under its final names. The release is then recorded once per
(name, format, manifest hash): exporting the same data again rewrites the
same bytes and adds no row. :func:`diff_releases` compares two of them.

Items with no split decision go to ``train``. Missing provenance is written
as a typed placeholder (``""``, ``-1``, ``-1.0``) and never as null, because a
column that is null in one split and typed in another stops the Hub viewer and
``datasets``; for the same reason tags are one comma-separated string (an
empty list has no element type).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from promptmill.core.errors import BadInput
from promptmill.core.runs import Run, code_version, now
from promptmill.core.state import kept_images, kept_prompts, split_of
from promptmill.core.store import Store

DEFAULT_SPLIT = "train"
SPLIT_ORDER = ("train", "validation", "test")
MARKER = ".promptmill-export.json"
STAGING = ".promptmill-staging"
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


def _last_by(rows, key_index: int = 0) -> dict:
    """Rows ordered by id -> {key: last row}: the newest fact about each item wins."""
    return {row[key_index]: row for row in rows}


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


def prompt_items(store: Store, split: str | None = None) -> list[dict]:
    """Every kept prompt (cleaned text) with its source and split, in prompt id order."""
    prompt_splits = split_of(store, "prompt")
    sources = {row[0]: row[1:] for row in store.execute("SELECT id, kind, uri FROM sources")}
    items = []
    for prompt_id, source_id, text in kept_prompts(store):
        item_split = prompt_splits.get(prompt_id) or DEFAULT_SPLIT
        if split and item_split != split:
            continue
        kind, uri = sources.get(source_id, ("", ""))
        items.append({"prompt_id": prompt_id, "split": item_split, "text": text,
                      "source_kind": kind, "source_uri": uri})
    return items


# --- the output folder ---

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ExportFolder:
    """OUT, written through a staging folder inside it.

    OUT must be missing, empty, or an earlier promptmill export (it has the
    marker file or a staging folder): only then are its files replaced, so an
    export never deletes files it did not write. Files are written under
    ``.promptmill-staging/``; :meth:`commit` moves them into place and writes
    the marker last. Known hashes (image blobs are named by theirs) spare
    reading files twice for the manifest.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(f"{self.out} is a file, not a folder")
        if self.out.is_dir():
            entries = {p.name for p in self.out.iterdir()}
            if entries and not entries & {MARKER, STAGING}:
                raise BadInput(f"{self.out} is not empty and not a promptmill export; choose an empty folder")
        self.staging = self.out / STAGING
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.known_sha256: dict[str, str] = {}

    def path(self, relative: str) -> Path:
        """The staging path of a file; creates its folder."""
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_bytes(self, relative: str, data: bytes):
        self.path(relative).write_bytes(data)
        self.known_sha256[relative] = hashlib.sha256(data).hexdigest()

    def write_text(self, relative: str, text: str):
        self.write_bytes(relative, text.encode("utf-8"))

    def copy_blob(self, relative: str, blob: Path, sha256: str):
        shutil.copyfile(blob, self.path(relative))
        self.known_sha256[relative] = sha256

    def manifest(self) -> dict[str, str]:
        manifest = {}
        for path in sorted(p for p in self.staging.rglob("*") if p.is_file()):
            relative = path.relative_to(self.staging).as_posix()
            manifest[relative] = self.known_sha256.get(relative) or sha256_file(path)
        return manifest

    def commit(self, marker: dict):
        """Replace OUT's previous export with the staged files; the marker goes last."""
        for entry in self.out.iterdir():
            if entry.name in (STAGING, MARKER):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for entry in sorted(self.staging.iterdir()):
            os.replace(entry, self.out / entry.name)
        self.staging.rmdir()
        tmp = self.out / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker, sort_keys=True, indent=1) + "\n")
        os.replace(tmp, self.out / MARKER)

    def abandon(self):
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.staging)


# --- releases rows ---

@dataclass
class Recorded:
    release_id: int
    manifest_sha256: str
    added: bool


def record_release(store: Store, run: Run, name: str, fmt: str, out: Path, params: dict, counts: dict,
                   manifest: dict[str, str], items: list[dict]) -> Recorded:
    """One releases row per distinct content of a release name, with its items; re-exports add nothing."""
    digest = manifest_sha256(manifest)
    with store.transaction() as conn:
        before = conn.total_changes
        conn.execute(
            "INSERT INTO releases (name, format, path, params, counts, manifest, manifest_sha256, code_version, "
            "created_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name, format, manifest_sha256) DO NOTHING",
            (name, fmt, str(Path(out).resolve()), json.dumps(params, sort_keys=True, default=str),
             json.dumps(counts, sort_keys=True), json.dumps(manifest, sort_keys=True), digest, code_version(),
             now(), run.id))
        added = conn.total_changes > before
        release_id = conn.execute("SELECT id FROM releases WHERE name = ? AND format = ? AND manifest_sha256 = ?",
                                  (name, fmt, digest)).fetchone()[0]
        if added:
            conn.executemany(
                "INSERT INTO release_items (release_id, item_type, item_id, split, file_name, sha256, text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(release_id, item["item_type"], item["item_id"], item["split"], item["file_name"],
                  item.get("sha256"), item.get("text")) for item in items])
    return Recorded(release_id, digest, added)


def find_release(store: Store, ref: str) -> dict:
    """A release by name (its newest row) or by '#ID'."""
    if ref.startswith("#") and ref[1:].isdigit():
        rows = store.query("SELECT * FROM releases WHERE id = ?", (int(ref[1:]),))
    else:
        rows = store.query("SELECT * FROM releases WHERE name = ? ORDER BY id DESC LIMIT 1", (ref,))
    if not rows:
        raise BadInput(f"no release {ref!r} in {store.path}")
    return rows[0]


def release_items(store: Store, release_id: int) -> dict[tuple[str, int], dict]:
    return {(row["item_type"], row["item_id"]): row for row in store.query(
        "SELECT item_type, item_id, split, file_name, sha256, text FROM release_items WHERE release_id = ? "
        "ORDER BY item_type, item_id", (release_id,))}


def diff_releases(store: Store, old_ref: str, new_ref: str) -> dict:
    """Items added, removed and changed (split, text, file or content) from release OLD to NEW."""
    old, new = find_release(store, old_ref), find_release(store, new_ref)
    before, after = release_items(store, old["id"]), release_items(store, new["id"])
    changed = []
    for key in sorted(before.keys() & after.keys()):
        fields = {field: [before[key][field], after[key][field]] for field in ("split", "file_name", "sha256", "text")
                  if before[key][field] != after[key][field]}
        if fields:
            changed.append({"item_type": key[0], "item_id": key[1], "changes": fields})
    old_files, new_files = json.loads(old["manifest"]), json.loads(new["manifest"])
    return {
        "old": {"id": old["id"], "name": old["name"], "format": old["format"], "manifest_sha256": old["manifest_sha256"]},
        "new": {"id": new["id"], "name": new["name"], "format": new["format"], "manifest_sha256": new["manifest_sha256"]},
        "added": [after[key] for key in sorted(after.keys() - before.keys())],
        "removed": [before[key] for key in sorted(before.keys() - after.keys())],
        "changed": changed,
        "files_added": sorted(new_files.keys() - old_files.keys()),
        "files_removed": sorted(old_files.keys() - new_files.keys()),
        "files_changed": sorted(p for p in old_files.keys() & new_files.keys() if old_files[p] != new_files[p]),
    }


def run_export(store: Store, run: Run, out: Path, name: str, fmt: str, params: dict,
               write: Callable[[ExportFolder], list[dict]],
               extra_files: Callable[[list[dict]], dict[str, bytes]] | None = None) -> Recorded:
    """Stage, write, add the card, move into place, then record the release (once per content)."""
    folder = ExportFolder(out)
    try:
        released = write(folder)
        for relative, data in (extra_files(released) if extra_files else {}).items():
            folder.write_bytes(relative, data)
        manifest = folder.manifest()
        folder.commit({"release": name, "format": fmt, "manifest_sha256": manifest_sha256(manifest)})
    except BaseException:
        folder.abandon()
        raise
    counts = {"items": len(released), "files": len(manifest)}
    for split, n in sorted(Counter(item["split"] for item in released).items()):
        counts[f"items {split}"] = n
    recorded = record_release(store, run, name, fmt, out, params, counts, manifest, released)
    run.add(f"{released[0]['item_type'] if released else 'item'}s exported", len(released))
    run.add("files written", len(manifest))
    run.add("releases recorded" if recorded.added else "releases already recorded")
    return recorded
