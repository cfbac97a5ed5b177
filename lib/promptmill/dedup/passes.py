"""Deduplication passes: find linked items, cluster them, keep one per cluster, record the rest.

A *pass* runs one method (exact, simhash, semantic; sha256, phash for images)
under a *scope*, the string that names its configuration. Its candidates are the
kept items, ignoring drops made under the same scope, so a pass killed half way
recomputes the same answer and only inserts what is missing. A finished pass
appends a `dedup_passes` row with the highest id it compared; the next pass
compares only newer items, against everything kept (older items are then
references: never dropped). ``--against`` adds a fixed reference set the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from promptmill.core.errors import BadInput
from promptmill.core.memory import release_freed_memory
from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.save import save_decisions
from promptmill.core.sources import resolve_sources
from promptmill.core.state import DROP_STAGES, kept_images_sql, kept_prompts_sql
from promptmill.core.store import Store
from promptmill.core.text import normalize, text_hash
from promptmill.dedup import clusters
from promptmill.dedup.fingerprints import TEXT_CHUNK

PROMPT_METHODS = ("exact", "cascade", "simhash", "semantic")
IMAGE_METHODS = ("sha256", "phash")
WRITE_BATCH = 20_000


class StoredTexts(Sequence[str]):
    """The cleaned texts of prompts `ids` (ascending), read from the database a chunk at a time
    when a method needs them, so a pass over millions of prompts never holds them all."""

    def __init__(self, store: Store, ids: np.ndarray):
        self.store, self.ids = store, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        """A text by position; a mask or index array gives the StoredTexts of those prompts."""
        if isinstance(index, (int, np.integer)):
            return self.take([index])[0]
        return StoredTexts(self.store, self.ids[index])

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self.ids), TEXT_CHUNK):
            ids = self.ids[start:start + TEXT_CHUNK].tolist()
            # A range scan, keeping only these ids: sparse ids hold no texts they don't need.
            text_of = self._texts("BETWEEN ? AND ?", [ids[0], ids[-1]], set(ids))
            yield from map(text_of.__getitem__, ids)

    def take(self, indices) -> list[str]:
        """The texts at INDICES (any order), fetched by id."""
        wanted = self.ids[np.asarray(indices, dtype=np.int64)].tolist()
        text_of = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            text_of.update(self._texts(f"IN ({','.join('?' * len(chunk))})", chunk, set(chunk)))
        return [text_of[i] for i in wanted]

    def _texts(self, ids_sql: str, params: list[int], wanted: set[int]) -> dict[int, str]:
        """id -> text as found, overlaid by its latest cleaned text (the `cleaned` rule of core/state),
        for the WANTED ids among those the SQL condition selects."""
        text_of = {i: text for i, text in self.store.execute(f"SELECT id, text FROM prompts WHERE id {ids_sql}", params)
                   if i in wanted}
        text_of.update((i, value) for i, value in self.store.execute(
            f"SELECT item_id, value FROM decisions WHERE item_type = 'prompt' AND item_id {ids_sql} "
            "AND stage = 'clean' AND verdict = 'keep' AND value IS NOT NULL ORDER BY id", params) if i in wanted)
        return text_of


@dataclass
class Items:
    """The items of one pass, in id order, as parallel arrays."""

    ids: np.ndarray
    source_ids: np.ndarray
    texts: StoredTexts | np.ndarray  # cleaned text (prompts, read when needed) or sha256 (images)
    keys: np.ndarray          # exact-match key: normalised-text hash, or sha256 hash
    sizes: np.ndarray         # for the 'longest' rule: text length or pixel count
    fixed: np.ndarray = field(default=None)  # reference items: never dropped

    def __post_init__(self):
        if self.fixed is None:
            self.fixed = np.zeros(len(self.ids), dtype=bool)

    def subset(self, index: np.ndarray) -> Items:
        """The items at a mask or an index array."""
        ids = self.ids[index]
        # Prompt texts are read by id: they share the ids array rather than hold a copy.
        texts = StoredTexts(self.texts.store, ids) if isinstance(self.texts, StoredTexts) else self.texts[index]
        return Items(ids, self.source_ids[index], texts, self.keys[index], self.sizes[index], self.fixed[index])

    @staticmethod
    def concat(first: Items, second: Items) -> Items:
        """Both sets of items, in id order."""
        ids = np.concatenate([first.ids, second.ids])
        texts = (StoredTexts(first.texts.store, ids) if isinstance(first.texts, StoredTexts)
                 else np.concatenate([first.texts, second.texts]))
        joined = Items(ids, np.concatenate([first.source_ids, second.source_ids]),
                       texts, np.concatenate([first.keys, second.keys]),
                       np.concatenate([first.sizes, second.sizes]), np.concatenate([first.fixed, second.fixed]))
        return joined.subset(np.argsort(joined.ids, kind="stable"))


@dataclass
class Links:
    """Pairs of item indices a method found similar, with its score for any pair.

    `transitive` links (equal keys) cluster by union-find; the others as stars, so that every
    drop names a kept item it was linked to. `group` marks items a method cannot tell apart
    (identical fingerprints). `describe`, given the indices of the links that dropped items,
    returns their (rule, reason, score, value) when a method records more than one score."""

    left: np.ndarray
    right: np.ndarray
    score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # without `describe`
    reason: str = ""  # format with score, e.g. "hamming {score:g}"
    transitive: bool = False
    group: np.ndarray | None = None
    describe: Callable[[np.ndarray], list[tuple[str, str, float, str | None]]] | None = None


# ---- loading ---------------------------------------------------------------------------------

def _prompt_items(store: Store, batches: Iterable[list[tuple]]) -> Items:
    """Items of batches of (id, source_id, text, cleaned text, norm_hash) rows in id order; the
    texts themselves are left in the database."""
    parts = []
    for rows in batches:
        ids, sources, keys, sizes = [], [], [], []
        for prompt_id, source_id, text, cleaned, norm_hash in rows:
            ids.append(prompt_id)
            sources.append(source_id)
            if cleaned is not None and cleaned != text:
                keys.append(text_hash(normalize(cleaned)))
                sizes.append(len(cleaned))
            else:
                keys.append(norm_hash)
                sizes.append(len(text))
        parts.append([np.array(column, dtype=np.int64) for column in (ids, sources, keys, sizes)])
    ids, sources, keys, sizes = ([np.concatenate(column) for column in zip(*parts)] if parts
                                 else [np.zeros(0, dtype=np.int64)] * 4)
    return Items(ids, sources, StoredTexts(store, ids), keys, sizes)


def load_prompts(store: Store, ignored_scopes: list[str], where: str = "1", params: dict | None = None) -> Items:
    """Kept prompts matching WHERE (over `p`), as if no drop of `ignored_scopes` had been made."""
    import json

    sql = kept_prompts_sql(where, "p.id, p.source_id, p.text, cleaned.value, p.norm_hash", ":ignored")
    cursor = store.execute(sql, {"ignored": json.dumps(ignored_scopes), **(params or {})})
    return _prompt_items(store, iter(lambda: cursor.fetchmany(TEXT_CHUNK), []))


def load_prompts_by_id(store: Store, ids: list[int]) -> Items:
    """Given prompts whatever their state (reference items of a release), with their cleaned text."""
    rows = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        rows += store.execute(
            f"""SELECT p.id, p.source_id, p.text,
                   (SELECT d.value FROM decisions d WHERE d.item_type = 'prompt' AND d.item_id = p.id
                      AND d.stage = 'clean' AND d.verdict = 'keep' AND d.value IS NOT NULL
                    ORDER BY d.id DESC LIMIT 1), p.norm_hash
                FROM prompts p WHERE p.id IN ({marks})""", chunk).fetchall()
    return _prompt_items(store, [sorted(rows)])


def load_images(store: Store, ignored_scopes: list[str], where: str = "1", params: dict | None = None) -> Items:
    """Kept images matching WHERE (over `i`), ignoring drops of `ignored_scopes`."""
    import json

    columns = ("i.id, COALESCE((SELECT min(o.source_id) FROM image_origins o WHERE o.image_id = i.id), 0), "
               "i.sha256, COALESCE(i.width * i.height, 0)")
    rows = store.execute(kept_images_sql(where, columns, ":ignored"),
                         {"ignored": json.dumps(ignored_scopes), **(params or {})}).fetchall()
    shas = [r[2] for r in rows]
    return Items(np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64),
                 np.array(shas, dtype=object), np.array([text_hash(s) for s in shas], dtype=np.int64),
                 np.array([r[3] for r in rows], dtype=np.int64))


# ---- reference sets ---------------------------------------------------------------------------

def reference_ids(store: Store, item_type: str, spec: str) -> list[int]:
    """Item ids of `source:ID|PATH`, `split:NAME` or `release:NAME` (a bare value is tried in that order)."""
    kind, _, value = spec.partition(":") if ":" in spec else ("", "", spec)
    if kind not in ("", "source", "split", "release"):
        kind, value = "", spec
    if kind in ("", "source"):
        try:
            sources = resolve_sources(store, (value,))
        except BadInput:
            if kind:
                raise
        else:
            table = "prompts" if item_type == "prompt" else "image_origins"
            column = "id" if item_type == "prompt" else "image_id"
            marks = ",".join("?" * len(sources))
            return [r[0] for r in store.execute(
                f"SELECT DISTINCT {column} FROM {table} WHERE source_id IN ({marks})", sources)]
    members = {
        "split": ("SELECT item_id FROM decisions WHERE id IN (SELECT max(id) FROM decisions WHERE item_type = ? "
                  "AND stage = 'split' GROUP BY item_id) AND value = ?", (item_type, value)),
        "release": ("SELECT DISTINCT ri.item_id FROM release_items ri JOIN releases r ON r.id = ri.release_id "
                    "WHERE ri.item_type = ? AND r.name = ?", (item_type, value)),
    }
    for name, (sql, params) in members.items():
        rows = store.execute(sql, params).fetchall() if kind in ("", name) else []
        if rows:
            return [r[0] for r in rows]
    raise ValueError(f"--against {spec!r} matches no source, split or release")


# ---- methods ------------------------------------------------------------------------------------

def exact_links(items: Items) -> Links:
    """Items with the same key (hash of the normalised text, or sha256)."""
    order = np.argsort(items.keys, kind="stable")
    keys = items.keys[order]
    same = np.flatnonzero(keys[1:] == keys[:-1])
    # Link each member to its predecessor in sorted order: spans the group.
    left, right = order[same], order[same + 1]
    useful = ~(items.fixed[left] & items.fixed[right])
    return Links(left[useful], right[useful], lambda a, b: np.ones(len(a)), "same normalised text", transitive=True)


def simhash_links(items: Items, features: str, k: int, values: np.ndarray | None = None) -> Links:
    from promptmill.dedup.fingerprints import fingerprints, hamming, near_pairs

    values = fingerprints(items.texts, features) if values is None else values
    left, right, _ = near_pairs(values, k, items.fixed)
    return Links(left, right, lambda a, b: hamming(values[a], values[b]).astype(float), "hamming {score:g}",
                 group=values)


def cascade_links(items: Items, embed: Callable[[np.ndarray], np.ndarray] | None,
                  count: Callable[[str, int], None] = lambda name, n: None, **cuts) -> Links:
    """MinHash LSH candidates verified by word-set overlap, the grey zone by cosine (`embed`);
    `count` hears how many candidate pairs were checked."""
    import json

    from promptmill.dedup import cascade

    sets = cascade.sketches(items.texts)
    group = cascade.same_sets(sets)
    release_freed_memory()
    values, firsts = np.unique(group, return_index=True)
    first = np.zeros(len(group), dtype=bool)
    first[firsts] = True
    found = cascade.verify(sets, cascade.candidates(sets, items.fixed, first), embed, **cuts)
    count("cascade pairs checked", found.checked)
    # The word sets go: the recorded scores come from the shared words and the word counts.
    sizes = sets.sizes.astype(found.common.dtype)
    del sets
    verified = len(found.left)
    # Texts with the same words as an earlier one are compared through it, and linked to it here.
    members = np.flatnonzero(~first)
    leads = firsts[np.searchsorted(values, group[members])]
    del values, firsts, first
    wanted = ~(items.fixed[members] & items.fixed[leads])
    left = np.concatenate([found.left, members[wanted].astype(found.left.dtype)])
    right = np.concatenate([found.right, leads[wanted].astype(found.right.dtype)])
    common, semantic, cosine = found.common, found.semantic, found.cosine
    del found, members, leads, wanted

    def describe(links: np.ndarray) -> list[tuple[str, str, float, str]]:
        """Link -1 (star's `group`) or past the verified ones: the item has the same words as the kept one."""
        links = np.asarray(links, dtype=np.int64)
        own = (links >= 0) & (links < verified)
        jaccard, containment = np.ones(len(links)), np.ones(len(links))
        mine = links[own]
        jaccard[own], containment[own] = cascade.scores(common[mine], sizes[left[mine]], sizes[right[mine]])
        out = []
        for link, is_own, j, c in zip(links.tolist(), own.tolist(), jaccard.tolist(), containment.tolist()):
            by_cosine = is_own and semantic is not None and bool(semantic[link])
            similarity = float(cosine[link]) if is_own and cosine is not None else float("nan")
            stage = "semantic" if by_cosine else "lexical"
            scores = {"jaccard": round(j, 4), "containment": round(c, 4),
                      "cosine": None if similarity != similarity else round(similarity, 4)}
            if not is_own:
                out.append(("cascade:lexical", "lexical: same words", 1.0, json.dumps(scores, sort_keys=True)))
                continue
            text = f"{stage}: jaccard {j:.3f}, containment {c:.3f}"
            if scores["cosine"] is not None:
                text += f", cosine {similarity:.3f}"
            out.append((f"cascade:{stage}", text, scores["cosine"] if by_cosine else scores["jaccard"],
                        json.dumps(scores, sort_keys=True)))
        return out

    return Links(left, right, group=group, describe=describe)


# ---- a pass ----------------------------------------------------------------------------------------

@dataclass
class PassResult:
    scope: str
    method: str
    items: int = 0
    compared: int = 0
    pairs: int = 0
    clusters: int = 0
    drops: int = 0
    drops_written: int = 0


def last_pass(store: Store, scope: str, item_type: str) -> int | None:
    return store.scalar("SELECT max(upto_id) FROM dedup_passes WHERE scope = ? AND item_type = ?",
                        (scope, item_type))


def nothing_new(store: Store, scopes: list[str], item_type: str) -> bool:
    """True when every scope has a pass and each item past the oldest of them was dropped by
    cleaning or dedup (and not reviewed since): then no pass would find anything to compare, and
    loading the items can be skipped."""
    passed = [last_pass(store, scope, item_type) for scope in scopes]
    if not passed or None in passed:
        return False
    table = "prompts" if item_type == "prompt" else "images"
    return store.scalar(
        f"SELECT count(*) FROM (SELECT 1 FROM {table} t WHERE t.id > :upto AND ("
        "NOT EXISTS (SELECT 1 FROM decisions d WHERE d.item_type = :type AND d.item_id = t.id "
        f"AND d.stage IN ({DROP_STAGES[item_type]}) AND d.verdict = 'drop') "
        "OR EXISTS (SELECT 1 FROM decisions d WHERE d.item_type = :type AND d.item_id = t.id "
        "AND d.stage = 'review')) LIMIT 1)", {"upto": min(passed), "type": item_type}) == 0


def dropped_by(store: Store, scope: str, item_type: str) -> np.ndarray:
    return np.array([r[0] for r in store.execute(
        "SELECT item_id FROM decisions WHERE item_type = ? AND stage = 'dedup' AND verdict = 'drop' "
        "AND scope = ?", (item_type, scope))], dtype=np.int64)


def prepare(store: Store, items: Items, scope: str, item_type: str) -> Items | None:
    """Items for a pass: those this scope already compared become references (or go, if it dropped
    them); None when nothing is new."""
    done_upto = last_pass(store, scope, item_type)
    if done_upto is None:
        return items if (~items.fixed).any() else None
    old = items.ids <= done_upto
    if not (~old & ~items.fixed).any():
        return None
    gone = np.isin(items.ids, dropped_by(store, scope, item_type)) & old & ~items.fixed
    items = items.subset(~gone)
    items.fixed = items.fixed | (items.ids <= done_upto)
    return items


def run_pass(store: Store, run: Run, item_type: str, scope: str, method: str, items: Items,
             find_links: Callable[[Items], Links], keep: str, source_priority: list[int] | None = None,
             batch_rows: int = WRITE_BATCH) -> PassResult:
    """Link, cluster, keep one per cluster, and write a drop decision for every other member."""
    result = PassResult(scope, method, items=len(items.ids))
    prepared = prepare(store, items, scope, item_type)
    if prepared is None:
        return result
    items = prepared
    result.compared = int((~items.fixed).sum())
    links = find_links(items)
    release_freed_memory()
    result.pairs = len(links.left)
    rank = clusters.keep_order(items.ids, items.sizes, items.source_ids, keep, source_priority)
    if links.transitive:
        roots = clusters.union_find(len(items.ids), links.left, links.right)
        kept = clusters.representatives(roots, rank, items.fixed)
        drops = clusters.dropped(roots, kept, items.fixed)
        via = np.full(len(items.ids), -1, dtype=np.int64)
    else:
        kept, via = clusters.star(len(items.ids), links.left, links.right, rank, items.fixed, links.group)
        drops = np.flatnonzero(kept != np.arange(len(items.ids)))
    release_freed_memory()
    result.clusters = len(np.unique(kept[drops]))
    result.drops = len(drops)
    with bar(total=len(drops), desc=f"{method} decisions", unit="drop") as progress:
        for start in range(0, len(drops), batch_rows):
            batch = drops[start:start + batch_rows]
            batch_kept = kept[batch]
            if links.describe is not None:
                described = links.describe(via[batch])
            else:
                scores = links.score(batch, batch_kept).tolist() if len(batch) else []
                described = [(method, links.reason.format(score=s), s, None) for s in scores]
            decisions = [
                {"item_type": item_type, "item_id": item_id, "stage": "dedup", "verdict": "drop",
                 "scope": scope, "rule": rule, "reason": f"{reason} to {item_type} {kept_id}",
                 "score": float(score), "representative_id": kept_id, "value": value}
                for item_id, kept_id, (rule, reason, score, value) in zip(
                    items.ids[batch].tolist(), items.ids[batch_kept].tolist(), described)
            ]
            with store.transaction() as conn:
                result.drops_written += save_decisions(conn, run, decisions)
            progress.update(len(batch))
    with store.transaction():
        store.execute(
            "INSERT INTO dedup_passes (scope, item_type, upto_id, items, pairs, clusters, drops, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (scope, item_type, int(items.ids[~items.fixed].max()), result.compared, result.pairs,
             result.clusters, result.drops, run.id))
    return result


def scope_name(method_scope: str, keep: str, sources: list[int] | None, against: str | None,
               source_priority: list[int] | None = None) -> str:
    """The configuration a pass's decisions belong to; the same options give the same scope."""
    parts = [method_scope, f"keep={keep}"]
    if keep == "source-priority":
        parts.append("priority=" + ",".join(map(str, source_priority or [])))
    if sources:
        parts.append("source=" + ",".join(map(str, sources)))
    if against:
        parts.append(f"against={against}")
    return ";".join(parts)


# ---- report ------------------------------------------------------------------------------------------

def report(store: Store, item_type: str, largest: int = 5, examples: int = 3) -> list[dict]:
    """Per scope: passes, items compared, links, clusters, drops, and the largest clusters with examples."""
    out = []
    for row in store.query(
            "SELECT scope, count(*) AS passes, sum(items) AS compared, sum(pairs) AS pairs, "
            "sum(clusters) AS clusters FROM dedup_passes WHERE item_type = ? GROUP BY scope ORDER BY min(run_id)",
            (item_type,)):
        row["drops"] = store.scalar(
            "SELECT count(*) FROM decisions WHERE item_type = ? AND stage = 'dedup' AND scope = ? "
            "AND verdict = 'drop'", (item_type, row["scope"]))
        biggest = store.query(
            "SELECT representative_id AS kept, count(*) + 1 AS size FROM decisions WHERE item_type = ? "
            "AND stage = 'dedup' AND scope = ? AND verdict = 'drop' GROUP BY representative_id "
            "ORDER BY size DESC, kept LIMIT ?", (item_type, row["scope"], largest))
        for cluster in biggest:
            members = [cluster["kept"]] + [r[0] for r in store.execute(
                "SELECT item_id FROM decisions WHERE item_type = ? AND stage = 'dedup' AND scope = ? "
                "AND representative_id = ? ORDER BY item_id LIMIT ?",
                (item_type, row["scope"], cluster["kept"], examples - 1))]
            if item_type == "prompt":
                texts = dict(store.execute(
                    f"SELECT id, text FROM prompts WHERE id IN ({','.join('?' * len(members))})", members))
            else:
                texts = dict(store.execute(
                    f"SELECT id, sha256 FROM images WHERE id IN ({','.join('?' * len(members))})", members))
            cluster["examples"] = [(m, texts.get(m)) for m in members]
        row["largest"] = biggest
        out.append(row)
    return out


# ---- images ---------------------------------------------------------------------------------------------

def image_phashes(store: Store, run: Run, items: Items, batch: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 perceptual hash, readable mask) of each image, computing and caching missing hashes.

    An unreadable image gets an `image_phashes` row with its error, is counted, is never
    retried, and takes no part in phash clusters."""
    import imagehash

    from promptmill.core.images import open_image, to_rgb8

    known = dict(store.execute("SELECT image_id, phash FROM image_phashes"))
    ext_of = dict(store.execute("SELECT id, ext FROM images"))
    missing = [(int(i), sha) for i, sha in zip(items.ids, items.texts) if int(i) not in known]
    with bar(total=len(missing), desc="phash", unit="image") as progress:
        for start in range(0, len(missing), batch):
            rows = []
            for image_id, sha in missing[start:start + batch]:
                try:
                    with open_image(store.blobs.path_for(sha, ext_of[image_id])) as image:
                        rows.append((image_id, str(imagehash.phash(to_rgb8(image))), None, run.id))
                except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's problem
                    rows.append((image_id, None, f"{type(exc).__name__}: {exc}"[:300], run.id))
                    run.add("images unreadable")
            with store.transaction() as conn:
                conn.executemany("INSERT INTO image_phashes (image_id, phash, error, run_id) VALUES (?, ?, ?, ?) "
                                 "ON CONFLICT DO NOTHING", rows)
                conn.executemany("UPDATE images SET phash = ? WHERE id = ? AND phash IS NULL",
                                 [(h, i) for i, h, _, _ in rows if h])
            known.update((i, h) for i, h, _, _ in rows)
            progress.update(len(rows))
    readable = np.array([bool(known.get(int(i))) for i in items.ids], dtype=bool)
    values = np.array([int(known[int(i)], 16) if ok else 0 for i, ok in zip(items.ids, readable)], dtype=np.uint64)
    return values, readable


def phash_links(values: np.ndarray, k: int, fixed: np.ndarray) -> Links:
    from promptmill.dedup.fingerprints import hamming, near_pairs

    left, right, _ = near_pairs(values, k, fixed)
    return Links(left, right, lambda a, b: hamming(values[a], values[b]).astype(float), "phash hamming {score:g}")
