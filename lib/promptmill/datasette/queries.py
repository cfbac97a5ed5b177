"""What the review pages show: one page of the image grid, one image, one page of prompts.

Pages are keyset-paginated (``WHERE key > last key ORDER BY key LIMIT n``) so
the hundredth page costs what the first does; the columns a tile shows are
computed for the page's rows only. A caption's lineage kind is its own kind,
or for an edit the kind its chain started as (the ``caption_heads`` view's
rule); the current caption of a kind is the newest head of that kind.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

PAGE_SIZES = (50, 100, 200)
STATES = ("kept", "dropped", "undecided", "reviewed")
SORTS = ("id", "score", "size")
NO_SCORE = -1e9

LINEAGE_KIND = "CASE WHEN c.kind = 'edit' THEN json_extract(c.params, '$.root_kind') ELSE c.kind END"
IS_HEAD = "NOT EXISTS (SELECT 1 FROM captions child WHERE child.parent_id = c.id)"
CLIP_SCORE = ("(SELECT s.value FROM scores s WHERE s.image_id = {a}.id AND s.kind = 'clip' "
              "ORDER BY s.id DESC LIMIT 1)")
LATEST = ("(SELECT d.{column} FROM decisions d WHERE d.item_type = '{item}' AND d.item_id = {a}.id "
          "AND d.stage = '{stage}' ORDER BY d.id DESC LIMIT 1)")


def review_verdict(item: str, alias: str) -> str:
    """The latest review verdict, NULL when none or when the latest was an undo that cleared it."""
    return (f"(SELECT CASE WHEN d.value = 'clear' THEN NULL ELSE d.verdict END FROM decisions d "
            f"WHERE d.item_type = '{item}' AND d.item_id = {alias}.id AND d.stage = 'review' "
            f"ORDER BY d.id DESC LIMIT 1)")


def state_sql(item: str, alias: str) -> str:
    """keep or drop, as the prompt_state / image_state views say."""
    stages = "'clean', 'dedup', 'score'" if item == "image" else "'clean', 'dedup'"
    return (f"COALESCE({review_verdict(item, alias)}, CASE WHEN EXISTS (SELECT 1 FROM decisions d "
            f"WHERE d.item_type = '{item}' AND d.item_id = {alias}.id AND d.stage IN ({stages}) "
            f"AND d.verdict = 'drop') THEN 'drop' ELSE 'keep' END)")


def state_condition(item: str, alias: str, state: str) -> str:
    """SQL that ALIAS is in STATE (kept, dropped, undecided, reviewed), as sets computed once per query
    rather than lookups per row, so a filter over every image stays fast."""
    stages = "'clean', 'dedup', 'score'" if item == "image" else "'clean', 'dedup'"
    reviews = (f"SELECT item_id, CASE WHEN value = 'clear' THEN NULL ELSE verdict END AS verdict FROM decisions "
               f"WHERE id IN (SELECT max(id) FROM decisions WHERE item_type = '{item}' AND stage = 'review' "
               f"GROUP BY item_id)")
    dropped = (f"SELECT item_id FROM decisions WHERE item_type = '{item}' AND stage IN ({stages}) "
               f"AND verdict = 'drop'")
    reviewed = f"{alias}.id IN (SELECT item_id FROM ({reviews}) WHERE verdict IS NOT NULL)"
    if state == "reviewed":
        return reviewed
    if state == "undecided":
        return f"NOT {reviewed}"
    verdict, fallback = ("keep", "NOT IN") if state == "kept" else ("drop", "IN")
    return (f"({alias}.id IN (SELECT item_id FROM ({reviews}) WHERE verdict = '{verdict}') "
            f"OR (NOT {reviewed} AND {alias}.id {fallback} ({dropped})))")


def tag_pattern(tag: str) -> str:
    """A LIKE pattern for TAG as one comma-separated item of a caption (see caption_has_tag)."""
    cleaned = " ".join(tag.replace("%", "").casefold().split())
    return f"%,{cleaned},%"


# A caption text as ',tag,tag,' (lower case, no spaces around commas), to match whole tags with LIKE;
# LIKE's '_' matches the space or underscore a tag may be spelt with.
TAGS_OF_TEXT = "(',' || replace(replace(lower(c.text), ', ', ','), ' ,', ',') || ',')"


@dataclass(frozen=True)
class GridQuery:
    """The grid's filters, sort and page, as they travel in the query string."""

    source: int | None = None
    split: str = ""
    kind: str = ""
    tag: str = ""
    notag: str = ""
    q: str = ""
    smin: float | None = None
    smax: float | None = None
    state: str = ""
    cluster: int | None = None
    sort: str = "id"
    desc: bool = False
    size: int = PAGE_SIZES[0]

    @classmethod
    def from_args(cls, args) -> GridQuery:
        """Parse request arguments; anything malformed falls back to its default."""
        values = {}
        for field in fields(cls):
            raw = (args.get(field.name) or "").strip()
            if not raw:
                continue
            try:
                if field.name in ("source", "cluster", "size"):
                    values[field.name] = int(raw)
                elif field.name in ("smin", "smax"):
                    values[field.name] = float(raw)
                elif field.name == "desc":
                    values[field.name] = raw in ("1", "true", "on")
                else:
                    values[field.name] = raw
            except ValueError:
                continue
        if values.get("state") not in (None, *STATES):
            values.pop("state")
        if values.get("sort") not in (None, *SORTS):
            values.pop("sort")
        if values.get("size") not in (None, *PAGE_SIZES):
            values.pop("size")
        return cls(**values)

    def args(self, **changes) -> dict:
        """Non-default values (with CHANGES) for building links."""
        defaults = GridQuery()
        merged = {field.name: getattr(self, field.name) for field in fields(self)} | changes
        return {key: ("1" if value is True else value) for key, value in merged.items()
                if value != getattr(defaults, key, None) and value not in (None, "", False)}

    def sort_key(self) -> str:
        return {"id": "i.id", "score": f"COALESCE({CLIP_SCORE.format(a='i')}, {NO_SCORE})",
                "size": "COALESCE(i.width * i.height, 0)"}[self.sort]

    def where(self) -> tuple[list[str], list]:
        """SQL conditions over images `i` and their parameters."""
        where, params = [], []
        head = f"SELECT 1 FROM captions c WHERE c.image_id = i.id AND {IS_HEAD}"
        if self.kind:
            head += f" AND {LINEAGE_KIND} = ?"
        kind_param = [self.kind] if self.kind else []
        if self.source is not None:
            where.append("EXISTS (SELECT 1 FROM image_origins o WHERE o.image_id = i.id AND o.source_id = ?)")
            params.append(self.source)
        if self.split:
            where.append(LATEST.format(column="value", item="image", a="i", stage="split") + " = ?")
            params.append(self.split)
        if self.kind:
            where.append(f"EXISTS ({head})")
            params.extend(kind_param)
        if self.tag:
            where.append(f"EXISTS ({head} AND {TAGS_OF_TEXT} LIKE ?)")
            params.extend([*kind_param, tag_pattern(self.tag)])
        if self.notag:
            where.append(f"NOT EXISTS ({head} AND {TAGS_OF_TEXT} LIKE ?)")
            params.extend([*kind_param, tag_pattern(self.notag)])
        if self.q:
            like = f"%{self.q}%"
            where.append(f"(EXISTS ({head} AND c.text LIKE ?) OR EXISTS (SELECT 1 FROM prompts p WHERE p.id IN ("
                         "SELECT o.prompt_id FROM image_origins o WHERE o.image_id = i.id UNION "
                         "SELECT g.prompt_id FROM generations g WHERE g.image_id = i.id) AND p.text LIKE ?))")
            params.extend([*kind_param, like, like])
        if self.smin is not None:
            where.append(f"{CLIP_SCORE.format(a='i')} >= ?")
            params.append(self.smin)
        if self.smax is not None:
            where.append(f"{CLIP_SCORE.format(a='i')} <= ?")
            params.append(self.smax)
        if self.state:
            where.append(state_condition("image", "i", self.state))
        if self.cluster is not None:
            where.append("(i.id = ? OR EXISTS (SELECT 1 FROM decisions d WHERE d.item_type = 'image' "
                         "AND d.item_id = i.id AND d.stage = 'dedup' AND d.representative_id = ?))")
            params.extend([self.cluster, self.cluster])
        return where, params


def matching_ids(conn, query: GridQuery) -> list[int]:
    """Every image the filters match (for a bulk action on the whole filter result)."""
    where, params = query.where()
    return [row[0] for row in conn.execute(
        f"SELECT i.id FROM images i WHERE {' AND '.join(where) or '1'} ORDER BY i.id", params)]


def grid_page(conn, query: GridQuery, after: str = "") -> dict:
    """One page of tiles after the cursor AFTER ('<key>:<id>'), and the cursor of the next page."""
    where, params = query.where()
    key = query.sort_key()
    if after:
        last_key, _, last_id = after.rpartition(":")
        try:
            cursor = (float(last_key), int(last_id))
        except ValueError:
            cursor = None
        if cursor:
            op = "<" if query.desc else ">"
            if query.sort == "id":  # a range on the primary key
                where.append(f"i.id {op} ?")
                params.append(cursor[1])
            else:
                where.append(f"({key} {op} ? OR ({key} = ? AND i.id {op} ?))")
                params.extend([cursor[0], cursor[0], cursor[1]])
    order = "DESC" if query.desc else "ASC"
    # the page's ids first (only the sort key per candidate row), then its columns for those rows only
    rows = _dicts(conn.execute(
        f"""SELECT i.id, i.sha256, i.width, i.height, i.bytes, page.sort_key,
                   {CLIP_SCORE.format(a='i')} AS score,
                   {LATEST.format(column='value', item='image', a='i', stage='split')} AS split,
                   {state_sql('image', 'i')} AS state,
                   {review_verdict('image', 'i')} AS reviewed
            FROM (SELECT i.id, {key} AS sort_key FROM images i WHERE {' AND '.join(where) or '1'}
                  ORDER BY sort_key {order}, i.id {order} LIMIT ?) page
            JOIN images i ON i.id = page.id
            ORDER BY page.sort_key {order}, page.id {order}""", [*params, query.size + 1]))
    more = len(rows) > query.size
    rows = rows[:query.size]
    _add_captions(conn, rows, query.kind)
    _add_sources(conn, rows)
    next_after = f"{rows[-1]['sort_key']}:{rows[-1]['id']}" if more else ""
    return {"tiles": rows, "next": next_after}


def tiles(conn, ids: list[int], kind: str = "") -> list[dict]:
    """Tiles of the given images (after an action, to redraw them)."""
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    rows = _dicts(conn.execute(
        f"""SELECT i.id, i.sha256, i.width, i.height, i.bytes, {CLIP_SCORE.format(a='i')} AS score,
                   {LATEST.format(column='value', item='image', a='i', stage='split')} AS split,
                   {state_sql('image', 'i')} AS state, {review_verdict('image', 'i')} AS reviewed
            FROM images i WHERE i.id IN ({marks}) ORDER BY i.id""", ids))
    _add_captions(conn, rows, kind)
    _add_sources(conn, rows)
    return rows


def current_heads(conn, image_ids: list[int], kind: str = "") -> dict[int, dict]:
    """image id -> its current caption of lineage KIND (any kind when empty): the newest head."""
    if not image_ids:
        return {}
    marks = ", ".join("?" * len(image_ids))
    extra, params = (f" AND {LINEAGE_KIND} = ?", [kind]) if kind else ("", [])
    heads = {}
    for row in _dicts(conn.execute(
            f"""SELECT c.id AS caption_id, c.image_id, c.kind, c.text, {LINEAGE_KIND} AS lineage_kind,
                       CASE WHEN c.kind = 'edit' THEN json_extract(c.params, '$.root_id') ELSE c.id END AS root_id
                FROM captions c WHERE c.image_id IN ({marks}) AND {IS_HEAD}{extra} ORDER BY c.id""",
            [*image_ids, *params])):
        heads[row["image_id"]] = row
    return heads


def _add_captions(conn, rows: list[dict], kind: str):
    heads = current_heads(conn, [row["id"] for row in rows], kind)
    caption_ids = [head["caption_id"] for head in heads.values()]
    scored: dict[int, dict[str, float | None]] = {}
    if caption_ids:
        for caption_id, tag, score in conn.execute(
                f"SELECT caption_id, tag, score FROM tags WHERE caption_id IN ({', '.join('?' * len(caption_ids))})",
                caption_ids):
            scored.setdefault(caption_id, {})[tag] = score
    for row in rows:
        head = heads.get(row["id"])
        row["caption"] = head
        if head is None:
            row["tags"] = []
            continue
        known = scored.get(head["caption_id"], {})
        row["tags"] = [(tag, known.get(tag)) for tag in _split_tags(head["text"])]


def _add_sources(conn, rows: list[dict]):
    ids = [row["id"] for row in rows]
    first: dict[int, str] = {}
    if ids:
        for image_id, kind, locator in conn.execute(
                f"""SELECT o.image_id, s.kind, o.locator FROM image_origins o JOIN sources s ON s.id = o.source_id
                    WHERE o.image_id IN ({', '.join('?' * len(ids))}) ORDER BY o.id""", ids):
            first.setdefault(image_id, f"{kind}: {locator}" if locator else kind)
        for (image_id,) in conn.execute(
                f"SELECT image_id FROM generations WHERE image_id IN ({', '.join('?' * len(ids))})", ids):
            first.setdefault(image_id, "generated")
    for row in rows:
        row["source"] = first.get(row["id"], "")


def _split_tags(text: str) -> list[str]:
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def _dicts(cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def filter_choices(conn) -> dict:
    """What the filter menus offer: sources, splits and caption kinds present."""
    return {
        "sources": _dicts(conn.execute("SELECT id, kind, uri FROM sources ORDER BY id")),
        "splits": [row[0] for row in conn.execute(
            "SELECT DISTINCT value FROM decisions WHERE stage = 'split' AND value IS NOT NULL ORDER BY value")],
        "kinds": [row[0] for row in conn.execute(
            "SELECT DISTINCT kind FROM captions WHERE kind != 'edit' ORDER BY kind")],
    }


def image_detail(conn, image_id: int) -> dict | None:
    """Everything the one-image page shows."""
    image = _dicts(conn.execute(
        f"""SELECT i.*, {state_sql('image', 'i')} AS state, {review_verdict('image', 'i')} AS reviewed,
                   {LATEST.format(column='value', item='image', a='i', stage='split')} AS split
            FROM images i WHERE i.id = ?""", [image_id]))
    if not image:
        return None
    captions = _dicts(conn.execute(
        f"""SELECT c.id, c.kind, c.text, c.parent_id, c.model, c.created_at, c.run_id, r.step, r.command,
                   {LINEAGE_KIND} AS lineage_kind, {IS_HEAD} AS is_head
            FROM captions c JOIN runs r ON r.id = c.run_id WHERE c.image_id = ? ORDER BY c.id""", [image_id]))
    tags: dict[int, list] = {}
    for caption_id, tag, score, category in conn.execute(
            "SELECT t.caption_id, t.tag, t.score, t.category FROM tags t JOIN captions c ON c.id = t.caption_id "
            "WHERE c.image_id = ? ORDER BY t.caption_id, t.position", [image_id]):
        tags.setdefault(caption_id, []).append((tag, score, category))
    for caption in captions:
        caption["tags"] = tags.get(caption["id"], [])
    prompts = _dicts(conn.execute(
        f"""SELECT p.id, p.text, {state_sql('prompt', 'p')} AS state, how FROM prompts p JOIN (
                SELECT prompt_id, 'found with' AS how FROM image_origins WHERE image_id = ? AND prompt_id IS NOT NULL
                UNION SELECT prompt_id, 'generated from' FROM generations WHERE image_id = ?) x ON x.prompt_id = p.id
            ORDER BY p.id""", [image_id, image_id]))
    decisions = _dicts(conn.execute(
        "SELECT d.id, d.stage, d.verdict, d.rule, d.reason, d.value, d.representative_id, d.run_id "
        "FROM decisions d WHERE d.item_type = 'image' AND d.item_id = ? ORDER BY d.id", [image_id]))
    representative = next((d["representative_id"] for d in decisions
                           if d["stage"] == "dedup" and d["representative_id"]), None)
    cluster = representative or image_id
    neighbours = [row[0] for row in conn.execute(
        "SELECT ? UNION SELECT item_id FROM decisions WHERE item_type = 'image' AND stage = 'dedup' "
        "AND representative_id = ? ORDER BY 1", [cluster, cluster]) if row[0] != image_id]
    scores = _dicts(conn.execute("SELECT kind, value, model, prompt_id, run_id FROM scores WHERE image_id = ? "
                                 "ORDER BY id", [image_id]))
    origins = _dicts(conn.execute(
        "SELECT s.kind, s.uri, o.locator FROM image_origins o JOIN sources s ON s.id = o.source_id "
        "WHERE o.image_id = ? ORDER BY o.id", [image_id]))
    previous, following = conn.execute("SELECT (SELECT max(id) FROM images WHERE id < ?), "
                                       "(SELECT min(id) FROM images WHERE id > ?)", [image_id, image_id]).fetchone()
    return {"image": image[0], "previous": previous, "next": following, "captions": captions, "prompts": prompts, "decisions": decisions,
            "neighbours": tiles(conn, neighbours[:50]), "cluster": cluster, "scores": scores, "origins": origins}


def prompt_page(conn, state: str = "", q: str = "", after: int = 0, size: int = PAGE_SIZES[0]) -> dict:
    """One page of prompts with their clean and dedup decisions and the prompts they were matched with."""
    where, params = ["p.id > ?"], [after]
    if state in STATES:
        where.append(state_condition("prompt", "p", state))
    if q:
        where.append("p.text LIKE ?")
        params.append(f"%{q}%")
    rows = _dicts(conn.execute(
        f"""SELECT p.id, p.text, s.kind AS source, {state_sql('prompt', 'p')} AS state,
                   {review_verdict('prompt', 'p')} AS reviewed
            FROM prompts p JOIN sources s ON s.id = p.source_id
            WHERE {' AND '.join(where)} ORDER BY p.id LIMIT ?""", [*params, size + 1]))
    more = len(rows) > size
    rows = rows[:size]
    ids = [row["id"] for row in rows]
    decided: dict[int, list] = {}
    matched: dict[int, set] = {}
    if ids:
        marks = ", ".join("?" * len(ids))
        for item_id, stage, verdict, rule, reason, representative in conn.execute(
                f"""SELECT item_id, stage, verdict, rule, reason, representative_id FROM decisions
                    WHERE item_type = 'prompt' AND item_id IN ({marks}) AND stage IN ('clean', 'dedup', 'review')
                    ORDER BY id""", ids):
            decided.setdefault(item_id, []).append(
                {"stage": stage, "verdict": verdict, "rule": rule, "reason": reason})
            if representative:
                matched.setdefault(item_id, set()).add(representative)
        for item_id, representative in conn.execute(
                f"""SELECT item_id, representative_id FROM decisions WHERE item_type = 'prompt' AND stage = 'dedup'
                    AND representative_id IN ({marks})""", ids):
            matched.setdefault(representative, set()).add(item_id)
    others = sorted({other for group in matched.values() for other in group})
    texts = dict(conn.execute(f"SELECT id, text FROM prompts WHERE id IN ({', '.join('?' * len(others))})",
                              others)) if others else {}
    for row in rows:
        row["decisions"] = decided.get(row["id"], [])
        row["matched"] = [(other, texts.get(other, "")) for other in sorted(matched.get(row["id"], ()))]
    return {"prompts": rows, "next": rows[-1]["id"] if more else None}
