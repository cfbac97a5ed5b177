"""What a review click writes: append-only rows in the browser session's run.

Each browser session is one ``runs`` row (step ``review``). Its actions are
numbered 1, 2, ...; every row an action writes carries the number, so an
action can be undone by appending rows that restore what it changed:

- keep / drop: a decision with stage ``review`` and scope ``review:<run>:<n>``;
- caption edits (inline text, tags, trigger word, replace): a caption of kind
  ``edit`` whose parent is the head it changed, with the params
  ``06_caption edit`` writes (``ops``, ``root_id``, ``root_kind``) plus the
  action number, natural key ``review:<run>:<n>:<image>``;
- undo: where the item still says what the action wrote (later actions were
  undone first), the previous review verdict again (or one valued ``clear``
  when there was none, which withdraws the review), and a child of the
  caption's head restoring the text the edit replaced. A first human caption
  (no parent) is left as it is.

Functions take the Store around Datasette's write connection, so every write
goes through its one write thread, one transaction per action.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from promptmill.caption.edit import EditOps, apply_ops, split_tags, tag_key
from promptmill.core.errors import BadInput
from promptmill.core.runs import Run
from promptmill.core.save import save_caption, save_decisions, save_tags
from promptmill.core.store import Store
from promptmill.datasette.queries import current_heads

STEP = "review"
ITEM_TYPES = ("image", "prompt")
CAPTION_ACTIONS = ("caption", "add_tag", "remove_tags", "trigger", "replace")


@dataclass
class Session:
    """One browser session: its run (made at its first action) and its actions, newest last."""

    id: str
    run: Run | None = None
    actions: list[dict] = field(default_factory=list)

    def start(self, store: Store) -> Run:
        if self.run is None:
            label = hashlib.sha256(self.id.encode()).hexdigest()[:12]  # names the session, reveals nothing of it
            self.run = Run(store, STEP, "browser", {"session": label}, argv=["promptmill", "browse", "--review"])
        return self.run

    def open_actions(self) -> list[dict]:
        return [action for action in self.actions if not action.get("undone") and action["name"] != "undo"]


def _scope(run: Run, number: int) -> str:
    return f"review:{run.id}:{number}"


def decide(store: Store, session: Session, item_type: str, ids: list[int], verdict: str, reason: str = "") -> dict:
    """Keep or drop the items, each with the reason given."""
    if item_type not in ITEM_TYPES or verdict not in ("keep", "drop"):
        raise BadInput(f"cannot {verdict} a {item_type}")
    _require(ids)
    table = "images" if item_type == "image" else "prompts"
    run = session.start(store)
    with store.transaction() as conn:
        ids = _existing(conn, table, ids)
        number = len(session.actions) + 1
        added = save_decisions(conn, run, ({"item_type": item_type, "item_id": item_id, "stage": "review",
                                            "verdict": verdict, "scope": _scope(run, number), "rule": verdict,
                                            "reason": reason or None} for item_id in ids))
    return _record(session, {"name": verdict, "item_type": item_type, "ids": ids, "rows": added})


def edit_captions(store: Store, session: Session, name: str, ids: list[int], *, kind: str = "", text: str = "",
                  tags: tuple[str, ...] = (), old: str = "", new: str = "") -> dict:
    """Change the current caption (of lineage KIND) of each image; a new 'edit' row where the text changes."""
    if name not in CAPTION_ACTIONS:
        raise BadInput(f"unknown caption action {name!r}")
    ops = _ops(name, tags, old, new)
    _require(ids)
    if name == "caption" and not text.strip():
        raise BadInput("a caption cannot be empty")
    run = session.start(store)
    with store.transaction() as conn:
        number = len(session.actions) + 1
        ids = _existing(conn, "images", ids)
        heads = current_heads(conn, ids, kind)
        written = 0
        for image_id in ids:
            head = heads.get(image_id)
            key = f"{_scope(run, number)}:{image_id}"
            if head is None:
                if name == "caption":  # an image without captions gets its first, written by a person
                    written += save_caption(conn, run, image_id, "human", text.strip(), natural_key=key,
                                            params={"review_action": number}) is not None
                continue
            changed = text.strip() if name == "caption" else apply_ops(head["text"], ops, image_id)
            if not changed or changed == head["text"]:
                continue
            params = {"ops": {"text": changed} if name == "caption" else ops.as_dict(), "root_id": head["root_id"],
                      "root_kind": head["lineage_kind"], "review_action": number}
            written += _write_edit(conn, run, image_id, head["caption_id"], changed, params, key)
    return _record(session, {"name": name, "item_type": "image", "ids": ids, "rows": written})


def _ops(name: str, tags: tuple[str, ...], old: str, new: str) -> EditOps:
    tags = tuple(tag.strip() for tag in tags if tag.strip())
    if name in ("add_tag", "trigger", "remove_tags") and not tags:
        raise BadInput("give a tag")
    if name == "replace" and not (old.strip() and new.strip()):
        raise BadInput("replace needs the old and the new tag")
    if name == "add_tag":
        return EditOps(trigger=tags[0], position="end")
    if name == "trigger":
        return EditOps(trigger=tags[0], position="start")
    if name == "remove_tags":
        return EditOps(remove_tags=tags)
    return EditOps(replace=((old.strip(), new.strip()),))


def _write_edit(conn, run: Run, image_id: int, parent_id: int, text: str, params: dict, key: str) -> int:
    """An edit caption under its parent, with the parent's tag scores and categories carried over."""
    caption_id = save_caption(conn, run, image_id, "edit", text, natural_key=key, params=params, parent_id=parent_id)
    if caption_id is None:
        return 0
    known = {tag_key(tag): (score, category) for tag, score, category in
             conn.execute("SELECT tag, score, category FROM tags WHERE caption_id = ?", (parent_id,))}
    save_tags(conn, caption_id, [(tag, *known.get(tag_key(tag), (None, None)), position)
                                 for position, tag in enumerate(split_tags(text))])
    return 1


def undo(store: Store, session: Session, which: str = "last") -> dict:
    """Undo the session's newest open action ('last') or all of them, newest first ('session')."""
    targets = session.open_actions()
    if which == "last":
        targets = targets[-1:]
    if not targets:
        raise BadInput("nothing to undo in this session")
    restored = kept = 0
    run = session.start(store)
    with store.transaction() as conn:
        number = len(session.actions) + 1
        for action in reversed(targets):
            done, left = _undo_action(conn, run, action["number"], number)
            restored += done
            kept += left
            action["undone"] = True
    return _record(session, {"name": "undo", "item_type": targets[-1]["item_type"],
                             "ids": sorted({i for action in targets for i in action["ids"]}),
                             "undoes": [action["number"] for action in targets], "rows": restored,
                             "changed_later": kept})


def _undo_action(conn, run: Run, undone: int, number: int) -> tuple[int, int]:
    """Rows restoring what action UNDONE wrote, where the item still says what it wrote (later actions
    undone first); (rows written, items changed since and left alone)."""
    written = left = 0
    decisions = conn.execute(
        "SELECT id, item_type, item_id, verdict FROM decisions WHERE run_id = ? AND stage = 'review' AND scope = ?",
        (run.id, _scope(run, undone))).fetchall()
    for decision_id, item_type, item_id, verdict in decisions:
        latest = conn.execute(
            "SELECT verdict, value FROM decisions WHERE item_type = ? AND item_id = ? AND stage = 'review' "
            "ORDER BY id DESC LIMIT 1", (item_type, item_id)).fetchone()
        if tuple(latest) != (verdict, None):
            left += 1
            continue
        previous = conn.execute(
            "SELECT verdict, value FROM decisions WHERE item_type = ? AND item_id = ? AND stage = 'review' "
            "AND id < ? ORDER BY id DESC LIMIT 1", (item_type, item_id, decision_id)).fetchone()
        restored, value = previous or ("keep", "clear")
        written += save_decisions(conn, run, [{
            "item_type": item_type, "item_id": item_id, "stage": "review", "verdict": restored,
            "scope": f"{_scope(run, number)}:{undone}", "rule": "undo", "reason": f"undo of action {undone}",
            "value": value}])
    edits = conn.execute(
        """SELECT c.id, c.image_id, c.text, c.params, p.id, p.text FROM captions c
           JOIN captions p ON p.id = c.parent_id
           WHERE c.run_id = ? AND c.natural_key LIKE ?""", (run.id, _scope(run, undone) + ":%")).fetchall()
    for caption_id, image_id, text, params, parent_id, parent_text in edits:
        head_id, head_text = _chain_head(conn, caption_id, text)
        if head_text != text:
            left += 1
            continue
        old = json.loads(params)
        written += _write_edit(conn, run, image_id, head_id, parent_text,
                               {"undo_of_action": undone, "restores": parent_id, "root_id": old["root_id"],
                                "root_kind": old["root_kind"], "review_action": number},
                               f"{_scope(run, number)}:{image_id}:{caption_id}")
    return written, left


def _chain_head(conn, caption_id: int, text: str) -> tuple[int, str]:
    """The newest caption derived from CAPTION_ID through its newest children."""
    while True:
        child = conn.execute("SELECT id, text FROM captions WHERE parent_id = ? ORDER BY id DESC LIMIT 1",
                             (caption_id,)).fetchone()
        if child is None:
            return caption_id, text
        caption_id, text = child


def _require(ids: list[int]):
    if not ids:
        raise BadInput("select at least one item")


def _existing(conn, table: str, ids: list[int]) -> list[int]:
    found = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(row[0] for row in conn.execute(
            f"SELECT id FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
    return sorted(found)


def _record(session: Session, action: dict) -> dict:
    """Number the action, count it in the run and store the counts, so the runs row says what happened so far."""
    action["number"] = len(session.actions) + 1
    session.actions.append(action)
    run = session.run
    run.add(f"{action['name']} actions")
    run.add(f"{action['item_type']} rows written" if action["name"] != "undo" else "undo rows written",
            action["rows"])
    run.save_counts()
    return {key: value for key, value in action.items() if key != "undone"}
