"""Caption edits that keep their history: every change is a new caption row.

An edit reads the head of each caption chain in scope (the newest caption
nothing was derived from yet), applies the operations and, when the text
changed, writes a caption of kind ``edit`` whose ``parent_id`` is that head and
whose params name the operations, the chain's root caption and its kind. An edit
is keyed by (operations, root caption): the same edit of the same chain is never
applied twice, whether re-run or resumed after a kill (``--regex --replace "^"
"masterpiece, "`` prefixes once), unless an undo came in between. The
current caption of an image for a kind is its newest head (view
``current_captions``). Undoing a run appends rows restoring the parents' text,
so an undo is itself history and can be undone.

Captions are treated as comma-separated tags ("1girl, solo, red hair"); a
sentence caption is one tag. Tags compare case-insensitively with underscores
and spaces equal ("long_hair" is "long hair").
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.save import save_caption
from promptmill.core.sources import images_of
from promptmill.core.store import Store

POSITIONS = ("start", "end", "random")
BATCH = 500


@dataclass(frozen=True)
class EditOps:
    """The operations of one edit, applied in this order: replace, remove, blacklist,
    dedup, sort, then the trigger word (so sorting never moves the trigger)."""

    replace: tuple[tuple[str, str], ...] = ()
    regex: bool = False
    remove_tags: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    dedup_tags: bool = False
    sort: bool = False
    trigger: str | None = None
    position: str = "start"
    _compiled: tuple = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}")
        if self.regex:
            object.__setattr__(self, "_compiled", tuple((re.compile(old), new) for old, new in self.replace))

    def is_empty(self) -> bool:
        return not (self.replace or self.remove_tags or self.blacklist or self.dedup_tags or self.sort
                    or self.trigger)

    def as_dict(self) -> dict:
        ops = asdict(self)
        ops.pop("_compiled")
        ops["replace"] = [list(pair) for pair in self.replace]
        ops["remove_tags"] = list(self.remove_tags)
        ops["blacklist"] = list(self.blacklist)
        return ops

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def tag_key(tag: str) -> str:
    return " ".join(tag.replace("_", " ").casefold().split())


def split_tags(text: str) -> list[str]:
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def apply_ops(text: str, ops: EditOps, image_id: int) -> str:
    """The edited caption text. Deterministic: a random trigger position is seeded by the image id."""
    if ops.regex:
        for pattern, new in ops._compiled:
            text = pattern.sub(new, text)
        tags = split_tags(text)
    else:
        tags = split_tags(text)
        for old, new in ops.replace:
            old_key = tag_key(old)
            tags = [new.strip() if tag_key(tag) == old_key else tag for tag in tags]
        tags = [tag for tag in tags if tag]
    unwanted = {tag_key(t) for t in (*ops.remove_tags, *ops.blacklist)}
    if unwanted:
        tags = [tag for tag in tags if tag_key(tag) not in unwanted]
    if ops.dedup_tags:
        seen: set[str] = set()
        tags = [tag for tag in tags if not (tag_key(tag) in seen or seen.add(tag_key(tag)))]
    if ops.sort:
        tags = sorted(tags, key=tag_key)
    if ops.trigger and tag_key(ops.trigger) not in {tag_key(tag) for tag in tags}:
        if ops.position == "start":
            index = 0
        elif ops.position == "end":
            index = len(tags)
        else:
            index = random.Random(image_id).randint(0, len(tags))
        tags.insert(index, ops.trigger.strip())
    return join_tags(tags)


def load_blacklist(path: str | Path) -> tuple[str, ...]:
    """One tag per line (or comma-separated); '#' starts a comment."""
    tags = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        tags.extend(split_tags(line.split("#", 1)[0]))
    return tuple(tags)


def chain_scope(alias: str, kinds: tuple[str, ...], source_ids: list[int] | None) -> tuple[str, list]:
    """SQL over ALIAS (a caption_heads or current_captions row) for chains whose lineage kind is in
    KINDS (all when empty) on images found in SOURCE_IDS (any when None), and its parameters."""
    in_sources, params = images_of(source_ids, f"{alias}.image_id")
    if not kinds:
        return in_sources, params
    return f"{alias}.lineage_kind IN ({', '.join('?' * len(kinds))}) AND {in_sources}", [*kinds, *params]


def heads_in_scope(store: Store, kinds: tuple[str, ...] = (), source_ids: list[int] | None = None) -> list[dict]:
    """Heads of every caption chain in scope (see chain_scope), with the id and kind of each chain's root."""
    where, params = chain_scope("h", kinds, source_ids)
    return store.query(
        f"""SELECT h.caption_id, h.image_id, h.lineage_kind, h.text, c.natural_key AS head_key,
                   json_extract(c.params, '$.ops') AS head_ops,
                   CASE WHEN h.kind = 'edit' THEN json_extract(c.params, '$.root_id') ELSE h.caption_id END
                       AS root_id
            FROM caption_heads h JOIN captions c ON c.id = h.caption_id
            WHERE {where} ORDER BY h.caption_id""",
        params,
    )


def edit_key(head: dict, ops_key: str) -> str:
    """The natural key of applying ops OPS_KEY to HEAD's chain: one per (operations, root caption), and
    a fresh one right after an undo, so an undone edit can be applied again."""
    key = f"edit:{head['root_id']}:{ops_key}"
    return f"{key}:after:{head['caption_id']}" if head["head_key"].startswith("undo:") else key


def _insert_edit(conn, run: Run, image_id: int, parent_id: int, text: str, params: dict,
                 natural_key: str) -> bool:
    caption_id = save_caption(conn, run, image_id, "edit", text, params=params, parent_id=parent_id,
                              natural_key=natural_key)
    if caption_id is None:
        return False
    _copy_tags(conn, caption_id, parent_id, text)
    return True


def _copy_tags(conn, caption_id: int, parent_id: int, text: str):
    """Tags of the new caption, keeping the score and category the parent gave each tag."""
    known = {tag_key(tag): (score, category) for tag, score, category in
             conn.execute("SELECT tag, score, category FROM tags WHERE caption_id = ?", (parent_id,))}
    conn.executemany(
        "INSERT OR IGNORE INTO tags (caption_id, tag, score, category, position) VALUES (?, ?, ?, ?, ?)",
        [(caption_id, tag, *known.get(tag_key(tag), (None, None)), position)
         for position, tag in enumerate(split_tags(text))],
    )


def edit_captions(store: Store, run: Run, ops: EditOps, kinds: tuple[str, ...] = (),
                  source_ids: list[int] | None = None) -> None:
    """Apply OPS to every head in scope; write a child caption where the text changes."""
    heads = heads_in_scope(store, kinds, source_ids)
    ops_dict, ops_key = ops.as_dict(), ops.key()
    with bar(len(heads), "edit captions", "caption") as progress:
        for start in range(0, len(heads), BATCH):
            batch = heads[start:start + BATCH]
            with store.transaction() as conn:
                for head in batch:
                    text = apply_ops(head["text"], ops, head["image_id"])
                    if text == head["text"]:
                        run.add("captions unchanged")
                        continue
                    if head["head_ops"] and json.loads(head["head_ops"]) == ops_dict:
                        run.add("edits already there")  # the head is this very edit (keyed before by parent)
                        continue
                    if not text:
                        run.add("captions left empty, not edited")
                        continue
                    params = {"ops": ops_dict, "root_id": head["root_id"], "root_kind": head["lineage_kind"]}
                    added = _insert_edit(conn, run, head["image_id"], head["caption_id"], text, params,
                                         edit_key(head, ops_key))
                    run.add("captions edited" if added else "edits already there")
            progress.update(len(batch))


def undo_run(store: Store, run: Run, undone_run_id: int) -> None:
    """Restore the parent text of every edit the run made that is still a head.

    An edit that was edited again later is left alone (and counted): undo the later run first."""
    edits = store.query(
        """SELECT c.id, c.image_id, c.params, p.text AS parent_text, p.id AS parent_id,
                  EXISTS (SELECT 1 FROM captions child WHERE child.parent_id = c.id
                          AND child.natural_key != 'undo:' || c.id) AS has_child
           FROM captions c JOIN captions p ON p.id = c.parent_id
           WHERE c.kind = 'edit' AND c.run_id = ? ORDER BY c.id""",
        (undone_run_id,),
    )
    if not edits:
        from promptmill.core.errors import BadInput

        raise BadInput(f"run {undone_run_id} made no caption edits")
    with bar(len(edits), f"undo run {undone_run_id}", "caption") as progress:
        for start in range(0, len(edits), BATCH):
            batch = edits[start:start + BATCH]
            with store.transaction() as conn:
                for edit in batch:
                    if edit["has_child"]:
                        run.add("edits edited again later, kept")
                        continue
                    old = json.loads(edit["params"])
                    params = {"undo_of_run": undone_run_id, "restores": edit["parent_id"],
                              "root_id": old["root_id"], "root_kind": old["root_kind"]}
                    added = _insert_edit(conn, run, edit["image_id"], edit["id"], edit["parent_text"], params,
                                         f"undo:{edit['id']}")
                    run.add("edits undone" if added else "undos already there")
            progress.update(len(batch))
