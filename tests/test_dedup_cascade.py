"""The near-duplicate cascade: MinHash candidates, exact overlap, MiniLM for the grey zone, star clusters."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dedup import dedup_killed_beside_clean

from conftest import ROOT, run_script
from promptmill.core.runs import start_run
from promptmill.core.save import save_decisions
from promptmill.core.store import open_store
from promptmill.dedup import cascade, clusters, fingerprints

EXAMPLE_PROMPTS = ROOT / "examples" / "prompts"
EDGE_TEXTS = ["", " ", "!!!", "a the of", "Café crème ÉCOLE école", "一只猫 在 屋顶", "x\x00y", "I", "a b",
              "trending on artstation, 8k", "Repeat repeat REPEAT", "long " * 5000 + "end",
              " ".join(f"w{i}" for i in range(3000)), "𝔘𝔫𝔦 𝒸𝑜𝒹𝑒", "İstanbul ß ﬁ"]


def example_lines(limit=None):
    lines = []
    for path in sorted(EXAMPLE_PROMPTS.glob("*.txt")):
        lines += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:limit] if limit else lines


def word_set(text):
    return set(fingerprints.word_features(text)) - cascade.BOILERPLATE - cascade.STOPWORDS


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_extension_and_numpy_give_the_same_sketches(monkeypatch):
    if fingerprints._simhash is None:
        pytest.skip("promptmill._simhash was not built (no C compiler at install time)")
    texts = example_lines(1500) + EDGE_TEXTS
    built = cascade.sketches(texts)
    monkeypatch.setattr(cascade, "_simhash", None)
    plain = cascade.sketches(texts)
    assert np.array_equal(built.indptr, plain.indptr)
    assert np.array_equal(built.words, plain.words)    # each text's words ascending
    assert np.array_equal(built.vocabulary, plain.vocabulary)
    assert (built.vocabulary[1:] > built.vocabulary[:-1]).all()
    signature = cascade.minhashes(plain, slice(None))
    assert signature.shape == (len(texts), cascade.PERMUTATIONS)
    assert (signature[plain.sizes == 0] == np.iinfo(np.uint32).max).all()
    monkeypatch.undo()
    assert np.array_equal(cascade.minhashes(built, slice(None)), signature)
    assert np.array_equal(cascade.band_keys(built, 3), cascade.band_keys(plain, 3))
    for i, text in enumerate(texts):
        words = built.hashes(i, i + 1)
        assert words.tolist() == sorted(cascade.word_hashes([w.encode() for w in word_set(text)]).tolist())
    rng = np.random.default_rng(0)
    left, right = rng.integers(0, len(texts), 5000), rng.integers(0, len(texts), 5000)
    monkeypatch.setattr(cascade, "_simhash", None)
    overlap = cascade.overlaps(plain, left, right)
    monkeypatch.undo()
    assert np.allclose(cascade.overlaps(built, left, right), overlap)


def test_overlaps_are_exact_and_candidates_hold_every_close_pair():
    lines = example_lines(1200)
    copies = [line + ", trending on artstation, 8k" for line in lines[:100]]
    copies += [" ".join(line.split()[:-1]) for line in lines[100:200] if len(line.split()) > 8]
    texts = lines + copies
    sets = cascade.sketches(texts)
    bands = list(cascade.candidates(sets, np.zeros(len(texts), dtype=bool), np.ones(len(texts), dtype=bool)))
    pairs = np.unique(np.concatenate([left * len(texts) + right for left, right in bands]))
    left, right = pairs // len(texts), pairs % len(texts)
    assert (left < right).all()
    jaccard, containment = cascade.overlaps(sets, left, right)
    words = [word_set(t) for t in texts]
    for a, b, j, c in zip(left[:3000].tolist(), right[:3000].tolist(), jaccard.tolist(), containment.tolist()):
        common = len(words[a] & words[b])
        assert j == pytest.approx(common / max(len(words[a] | words[b]), 1))
        assert c == pytest.approx(common / max(min(len(words[a]), len(words[b])), 1))
    # Brute force over all pairs: LSH misses no pair at Jaccard >= 0.8 here.
    found = set(zip(left.tolist(), right.tolist()))
    close = [(a, b) for a in range(len(texts)) for b in range(a + 1, len(texts))
             if words[a] and len(words[a] & words[b]) >= 0.8 * len(words[a] | words[b])]
    assert len(close) >= 150 and set(close) <= found


def test_texts_with_the_same_words_are_compared_once_and_cluster_as_if_every_pair_were(monkeypatch):
    from promptmill.dedup import passes

    lines = example_lines(600)
    copies = [", ".join(reversed(line.split(", "))).upper() for line in lines[:150]]  # same words, other order
    copies += [line + ", trending on artstation" for line in lines[100:200]]
    texts = lines + copies + ["", "!!!", "", "a the of"]
    sets = cascade.sketches(texts)
    group = cascade.same_sets(sets)
    words = [frozenset(word_set(t)) for t in texts]
    for i in range(len(texts)):
        for j in (i + 1, len(lines) + i % 150):
            if j < len(texts) and i != j:
                assert (group[i] == group[j]) == (bool(words[i]) and words[i] == words[j]), (texts[i], texts[j])
    # Kept items and representatives equal those of star clustering over every close pair, no groups.
    items = passes.Items(np.arange(len(texts)), np.zeros(len(texts), dtype=np.int64), np.array(texts, dtype=object),
                         np.arange(len(texts)), np.zeros(len(texts), dtype=np.int64))
    checked = {}
    links = passes.cascade_links(items, None, lambda name, n: checked.update({name: n}))
    rank = np.arange(len(texts))
    kept, via = clusters.star(len(texts), links.left, links.right, rank, None, links.group)
    close = [(a, b) for a in range(len(texts)) for b in range(a + 1, len(texts))
             if words[a] and len(words[a] & words[b]) >= 0.8 * len(words[a] | words[b])]
    expected, _ = clusters.star(len(texts), np.array([a for a, _ in close]), np.array([b for _, b in close]), rank)
    assert np.array_equal(kept, expected) and (kept != rank).sum() >= 250
    described = links.describe(via[kept != rank])
    assert {rule for rule, *_ in described} == {"cascade:lexical"}
    assert any(reason == "lexical: same words" for _, reason, *_ in described)
    assert 0 < checked["cascade pairs checked"] < len(close) * cascade.BANDS
    # Each text with the same words as an earlier one is linked to the first of them (a leakage check
    # across splits reads the links, not the groups).
    links_of = set(zip(links.left.tolist(), links.right.tolist()))
    first_of = {}
    for i, g in enumerate(group.tolist()):
        first_of.setdefault(g, i)
    copies = [i for i, g in enumerate(group.tolist()) if first_of[g] != i]
    assert len(copies) >= 150 and all((i, first_of[group[i]]) in links_of for i in copies)
    index_of = {pair: k for k, pair in enumerate(zip(links.left.tolist(), links.right.tolist()))}
    same = links.describe(np.array([index_of[i, first_of[group[i]]] for i in copies]))
    assert {(reason, score) for _, reason, score, _ in same} == {("lexical: same words", 1.0)}


pair_lists = st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=70)


@settings(max_examples=200, deadline=None)
@given(pairs=pair_lists, fixed_bits=st.lists(st.booleans(), min_size=30, max_size=30),
       groups=st.one_of(st.none(), st.lists(st.integers(0, 20), min_size=30, max_size=30)),
       order=st.permutations(range(30)))
def test_star_clusters_never_chain(pairs, fixed_bits, groups, order):
    n = 30
    fixed = np.array(fixed_bits)
    left = np.array([a for a, _ in pairs], dtype=np.int64)
    right = np.array([b for _, b in pairs], dtype=np.int64)
    group = None if groups is None else np.array(groups)
    rank = np.array(order)
    kept, via = clusters.star(n, left, right, rank, fixed, group)
    same = (lambda a, b: False) if group is None else (lambda a, b: group[a] == group[b])
    linked = {(a, b) for a, b in pairs} | {(b, a) for a, b in pairs}
    dropped = kept != np.arange(n)
    assert not (dropped & fixed).any()
    for item in np.flatnonzero(dropped).tolist():
        representative = int(kept[item])
        assert not dropped[representative]                 # a representative is kept...
        # ...and this item was linked to it: directly, or through an identical twin of either
        twins = [j for j in range(n) if j == item or same(j, item)]
        partners = [j for j in range(n) if j == representative or same(j, representative)]
        assert same(item, representative) or any((t, p) in linked for t in twins for p in partners)
        if via[item] >= 0:
            a, b = int(left[via[item]]), int(right[via[item]])
            assert {a, b} & set(twins) and {a, b} & set(partners)
    # Maximal: two kept items are never linked unless both are reference items or twins.
    for a, b in pairs:
        if a != b and not dropped[a] and not dropped[b] and not (fixed[a] and fixed[b]):
            assert group is not None and (group[a] == group[b] or fixed[a] or fixed[b])


def test_a_chain_drops_only_what_its_representative_matches(tmp_path, invoke, store):
    a = "a red fox sitting in fresh snow under tall pine trees at dawn"
    b = "a red fox sitting in fresh snow under tall pine trees at dusk with soft light"
    c = "a grey wolf sitting in fresh snow under tall pine trees at dusk with soft light"
    invoke("01_collect", "text", write_lines(tmp_path / "p.txt", [a, b, c]))
    result = invoke("03_dedup", "prompts", "--method", "cascade", "--lexical-only", "--jaccard", "0.6")
    rows = store.query("SELECT item_id, representative_id, rule, reason, score, value FROM decisions")
    assert [(r["item_id"], r["representative_id"], r["rule"]) for r in rows] == [(2, 1, "cascade:lexical")]
    scores = json.loads(rows[0]["value"])
    assert scores["jaccard"] == pytest.approx(rows[0]["score"], abs=1e-4) and scores["cosine"] is None
    assert "jaccard" in rows[0]["reason"] and "to prompt 1" in rows[0]["reason"]
    assert "cascade dropped 1" in result.output and "cascade pairs checked" in result.output


def test_boilerplate_tails_case_and_order_are_lexical_duplicates(tmp_path, invoke, store):
    lines = example_lines(300)
    copies = [line.upper() + ", trending on artstation, 8k, octane render" for line in lines[:40]]
    copies += [", ".join(reversed(line.split(", "))) for line in lines[40:80] if ", " in line]
    invoke("01_collect", "text", write_lines(tmp_path / "a.txt", lines), write_lines(tmp_path / "b.txt", copies))
    invoke("03_dedup", "prompts", "--method", "exact,cascade", "--lexical-only")
    drops = {r["item_id"]: r["representative_id"] for r in store.query(
        "SELECT item_id, representative_id FROM decisions WHERE verdict = 'drop'")}
    copy_ids = range(301, 301 + len(copies))
    assert sum(drops.get(i) == i - 300 for i in copy_ids[:40]) == 40
    assert sum(i in drops for i in copy_ids[40:]) == len(copies) - 40
    assert not set(drops.values()) & set(drops)          # no representative is itself dropped


def test_new_prompts_and_against_with_the_cascade(tmp_path, invoke, store):
    lines = example_lines(400)
    first = write_lines(tmp_path / "first.txt", lines)
    second = write_lines(tmp_path / "second.txt", [line + ", highly detailed, 8k" for line in lines[:30]])
    invoke("01_collect", "text", first)
    args = ("--method", "cascade", "--lexical-only")
    invoke("03_dedup", "prompts", *args)
    before = store.count("decisions")
    invoke("01_collect", "text", second)
    result = invoke("03_dedup", "prompts", *args)
    assert "cascade compared 30" in result.output
    new = store.query("SELECT item_id, representative_id FROM decisions WHERE id > ?", (before,))
    assert {r["item_id"] for r in new} == set(range(401, 431))
    assert all(r["representative_id"] <= 400 for r in new)
    again = invoke("03_dedup", "prompts", *args)
    assert "cascade dropped 0" in again.output or "cascade dropped" not in again.output
    # A reference set is never dropped, even when it is the newer one.
    invoke("03_dedup", "prompts", *args, "--against", f"source:{second}")
    reference = {r["id"] for r in store.query("SELECT id FROM prompts WHERE source_id = 2")}
    against = store.query("SELECT item_id, representative_id FROM decisions WHERE scope LIKE '%against=%'")
    assert against and not reference & {r["item_id"] for r in against}
    assert {r["representative_id"] for r in against} <= reference


def test_a_rerun_with_nothing_new_loads_nothing(tmp_path, invoke, store, monkeypatch):
    from promptmill.dedup import passes

    lines = example_lines(200)
    invoke("01_collect", "text", write_lines(tmp_path / "a.txt", lines))
    invoke("03_dedup", "prompts", "--lexical-only")

    def no_loading(*args, **kwargs):
        raise AssertionError("prompts loaded for a pass with nothing to compare")
    monkeypatch.setattr(passes, "load_prompts", no_loading)
    assert "methods up to date 2" in invoke("03_dedup", "prompts", "--lexical-only").output
    # A new prompt that cleaning dropped changes nothing; one it kept is compared.
    invoke("01_collect", "text", write_lines(tmp_path / "b.txt", ["dropped by cleaning"]))
    with start_run(store, "02_clean", "prompts", {}, argv=["pytest"]) as cleaning, store.transaction() as conn:
        save_decisions(conn, cleaning, [{"item_type": "prompt", "item_id": 201, "stage": "clean",
                                         "verdict": "drop", "scope": "test"}])
    assert "methods up to date 2" in invoke("03_dedup", "prompts", "--lexical-only").output
    invoke("01_collect", "text", write_lines(tmp_path / "c.txt", ["a brand new teapot"]))
    with pytest.raises(AssertionError, match="prompts loaded"):
        invoke("03_dedup", "prompts", "--lexical-only")
    monkeypatch.undo()
    assert "cascade compared 1" in invoke("03_dedup", "prompts", "--lexical-only").output
    assert "methods up to date 2" in invoke("03_dedup", "prompts", "--lexical-only").output


def test_images_rerun_with_nothing_new_stops_at_once(invoke):
    invoke("01_collect", "imagefolder", ROOT / "examples" / "images")
    first = invoke("03_dedup", "images").output
    assert "sha256 compared" in first and "phash compared" in first
    assert "methods up to date 2" in invoke("03_dedup", "images").output


@pytest.mark.slow
def test_grey_zone_pairs_are_linked_by_minilm_and_embeddings_are_cached(tmp_path, invoke, store, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    original = "a majestic lion resting under an acacia tree in the golden savanna at sunset"
    typos = "a majestci lion resting under an acacia tree in the golden savana at sunset"
    unrelated = "a majestic castle standing under an acacia tree in the golden savanna at night"
    invoke("01_collect", "text", write_lines(tmp_path / "p.txt", [original, typos, unrelated]))
    result = invoke("03_dedup", "prompts", "--method", "cascade")
    rows = store.query("SELECT item_id, representative_id, rule, value FROM decisions")
    assert [(r["item_id"], r["representative_id"], r["rule"]) for r in rows] == [(2, 1, "cascade:semantic")]
    scores = json.loads(rows[0]["value"])
    assert scores["jaccard"] < 0.8 <= 0.85 <= scores["cosine"]
    assert "embeddings computed 2" in result.output       # only the grey-zone pair was embedded
    from promptmill.dedup import semantic

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every text was cached")
    monkeypatch.setattr(semantic, "load_model", no_model)
    invoke("03_dedup", "prompts", "--method", "cascade", "--cosine", "0.9")
    assert store.count("embeddings") == 2                # the second scope embedded nothing new


@pytest.mark.resilience
def test_sigkill_mid_cascade_then_rerun_matches_a_clean_run(tmp_path):
    lines = example_lines()
    copies = [line + ", trending on artstation" for line in lines[:1500]]
    copies += [" ".join(line.split()[1:]) for line in lines[1500:3000] if len(line.split()) > 6]
    files = [write_lines(tmp_path / "a.txt", lines), write_lines(tmp_path / "b.txt", copies)]
    args = ["prompts", "--method", "exact,cascade", "--lexical-only", "--batch-rows", "20"]
    dbs, store = dedup_killed_beside_clean(tmp_path, files, args, kill_at=200)
    assert 0 < store.count("decisions") < 2000
    assert run_script("03_dedup", *args, "--db", dbs["killed"]).returncode == 0
    clean = open_store(dbs["clean"])
    query = "SELECT item_id, scope, rule, score, representative_id, value FROM decisions ORDER BY item_id, scope"
    assert store.query(query) == clean.query(query)
    store.close()
    clean.close()


def test_the_extension_refuses_word_sets_that_do_not_fit():
    if not cascade._has_extension():
        pytest.skip("promptmill._simhash was not built (no C compiler at install time)")
    simhash = cascade._simhash
    indptr, words = np.array([0, 2, 3], dtype=np.int64), np.array([0, 1, 1], dtype=np.uint32)
    table = np.arange(4, dtype=np.uint32)  # two words, two values each
    assert np.frombuffer(simhash.minhash_sets(indptr, words, table, 2), dtype=np.uint32).tolist() == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        simhash.minhash_sets(indptr, words, table[:2], 2)
    with pytest.raises(ValueError):
        simhash.minhash_sets(indptr, words, table[:3], 2)
    with pytest.raises(ValueError):
        simhash.minhash_sets(np.array([0, 4], dtype=np.int64), words, table, 2)
    pair = np.array([0], dtype=np.int64)
    assert np.frombuffer(simhash.common_words(indptr, words, pair, pair + 1), dtype=np.int64).tolist() == [1]
    with pytest.raises(IndexError):
        simhash.common_words(indptr, words, pair, pair + 2)
    with pytest.raises(ValueError):  # a pair's text reaching past the words
        simhash.common_words(np.array([0, 2, 9], dtype=np.int64), words, pair, pair + 1)
