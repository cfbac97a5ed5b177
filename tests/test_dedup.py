import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simhash import Simhash

from conftest import ROOT, SEED_PROMPTS, run_script, seed_lines
from promptmill.core.store import open_store
from promptmill.dedup import clusters, fingerprints


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def dedup_drops(store, scope_like="%"):
    return {(r["item_id"], r["representative_id"], r["rule"]) for r in store.query(
        "SELECT item_id, representative_id, rule FROM decisions WHERE stage = 'dedup' AND verdict = 'drop' "
        "AND scope LIKE ?", (scope_like,))}


@pytest.fixture(params=["extension", "numpy"])
def engine(request, monkeypatch):
    """Each fingerprint test runs through the C extension and through the numpy path it replaces."""
    if request.param == "numpy":
        monkeypatch.setattr(fingerprints, "_simhash", None)
    elif fingerprints._simhash is None:
        pytest.skip("promptmill._simhash was not built (no C compiler at install time)")
    assert fingerprints.engine() == ("C extension" if request.param == "extension" else "numpy")
    return request.param


@pytest.mark.parametrize("features", ["word", "wordset", "word2", "char4"])
def test_fingerprints_equal_the_simhash_package(features, engine):
    lines = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 2500) + seed_lines("prompts_filtered_4.0.txt", 500)
    lines += ["", "!!!", "__init__ ÉCOLE ﬁne", "a", "ΣΊΣΥΦΟΣ ς", "一只猫 在 屋顶", "x\x00y"]
    tokenize = fingerprints.FEATURES[features]
    ours = fingerprints.fingerprints(lines, features)
    assert [int(v) for v in ours] == [Simhash(tokenize(line)).value for line in lines]


def test_char4_equals_the_package_on_raw_text(engine):
    lines = seed_lines("openprompts_dedup_085_075_diff_pprc_085wt_075wv.txt", 1000)
    ours = fingerprints.fingerprints(lines, "char4")
    assert [int(v) for v in ours] == [Simhash(fingerprints.fold(line)).value for line in lines]


# Edges of the batch tokeniser: blanks at either end, short and empty contents, repeated texts,
# non-ASCII texts between ASCII ones, control and non-ASCII space characters, letters beyond
# 16 bits (CJK extension B, mathematical letters that NFKC folds to ASCII).
EDGE_TEXTS = ["", " ", "  a  ", "ab", "abc", "abcd", "abcde", "a b c d", "Repeat me", "A\tB\nC", "x\x1cy\x01z",
              "\u00a0nb\u2003sp", "𝔘𝔫𝔦 𝒸𝑜𝒹𝑒", "𠀀𠀁 𠀂x", "😀 smile 😀", "İstanbul ß ﬁ", "_", "repeat ME!", "Repeat me",
              "a" * 70_000 + " b",
              # only punctuation; digits and underscores; one-letter words
              "!?.,;:-()[]{}'\"/\\@#$%^&*+=<>|~`", "__init__ 42 x_1 3.14 _a_ 007", "I", "a b", "Q!",
              # words around the 16 bytes a feature keeps inline, and far longer; md5 padding edges
              "abcdefghijklmnop abcdefghijklmnopq abcdefghijklmno", "Supercalifragilisticexpialidocious x",
              " ".join("K" * n for n in (1, 2, 3, 4, 5, 27, 28, 31, 32, 55, 56, 57, 63, 64, 65, 119, 120, 121)),
              # hundreds of features (the vote's 8-bit counters are emptied every 255)
              " ".join(f"w{i}" for i in range(3000)), "the " * 1000 + "end", "Cat dog " * 400,
              "long " * 20_000]


@pytest.mark.parametrize("features", ["word", "wordset", "word2", "char4"])
def test_fingerprints_equal_the_package_on_edge_texts(features, engine):
    tokenize = fingerprints.FEATURES[features]
    ours = fingerprints.fingerprints(EDGE_TEXTS, features)
    assert [int(v) for v in ours] == [Simhash(tokenize(text)).value for text in EDGE_TEXTS]


@pytest.mark.parametrize("features", ["word", "wordset", "word2", "char4"])
def test_mixed_batches_keep_order_and_match_texts_alone(features, engine):
    texts = ["Plain ASCII", "Café crème", "plain ascii", "", "一只猫", "Plain ASCII", "ÉCOLE école", "x"] * 3
    together = fingerprints.fingerprints(texts, features)
    alone = [int(fingerprints.fingerprints([text], features)[0]) for text in texts]
    assert [int(v) for v in together] == alone
    assert alone == [Simhash(fingerprints.FEATURES[features](text)).value for text in texts]


def test_every_code_point_splits_words_as_the_package_regex(monkeypatch):
    """The extension's letter test (Unicode alphanumerics, '_' and the CJK range) against
    the regex of the numpy path, for every code point: "x?y" is one word or two."""
    if fingerprints._simhash is None:
        pytest.skip("promptmill._simhash was not built (no C compiler at install time)")
    texts = [f"x{chr(c)}y" for c in range(0x110000)]
    ours = fingerprints.fingerprints(texts, "word")
    monkeypatch.setattr(fingerprints, "_simhash", None)
    assert np.array_equal(ours, fingerprints.fingerprints(texts, "word"))


def test_char4_with_more_distinct_letters_than_16_bits_hold(engine):
    letters = [chr(c) for c in [*range(0x4E00, 0x9FA0), *range(0xAC00, 0xD7A4), *range(0x20000, 0x2A6D0)]]
    texts = ["".join(letters[i:i + 12]) for i in range(0, len(letters), 12)]
    assert len(letters) > 0x10000 and all(fingerprints.fold(t) == t for t in texts[::500])
    ours = fingerprints.fingerprints(texts, "char4")
    assert [int(v) for v in ours] == [Simhash(fingerprints.char4_features(t)).value for t in texts]

def test_near_pairs_match_brute_force():
    lines = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 3000)
    values = fingerprints.fingerprints(lines + [line + ", trending on artstation" for line in lines[:300]], "word")
    distance = np.bitwise_count(values[:, None] ^ values[None, :])
    upper = np.triu(distance <= 4, 1)
    left, right, dist = fingerprints.near_pairs(values, 4)
    roots = clusters.union_find(len(values), left, right)
    brute_roots = clusters.union_find(len(values), *np.nonzero(upper))
    assert (dist <= 4).all() and np.array_equal(roots, brute_roots)


pair_lists = st.lists(st.tuples(st.integers(0, 39), st.integers(0, 39)), max_size=80)


@settings(max_examples=150, deadline=None)
@given(pairs=pair_lists, fixed_bits=st.lists(st.booleans(), min_size=40, max_size=40),
       lengths=st.lists(st.integers(1, 50), min_size=40, max_size=40),
       rule=st.sampled_from(["oldest", "longest", "source-priority"]))
def test_every_cluster_keeps_one_and_references_stay(pairs, fixed_bits, lengths, rule):
    n = 40
    left = np.array([a for a, _ in pairs], dtype=np.int64)
    right = np.array([b for _, b in pairs], dtype=np.int64)
    fixed = np.array(fixed_bits)
    roots = clusters.union_find(n, left, right)
    for a, b in pairs:
        assert roots[a] == roots[b]
    rank = clusters.keep_order(np.arange(n) * 3 + 1, np.array(lengths), np.arange(n) % 4, rule, [2, 0])
    kept = clusters.representatives(roots, rank, fixed)
    drops = clusters.dropped(roots, kept, fixed)
    dropped = np.zeros(n, dtype=bool)
    dropped[drops] = True
    assert not (dropped & fixed).any()
    assert not dropped[kept[drops]].any()                 # every representative is kept
    assert (roots[kept] == roots).all()                   # and in the same cluster
    for root in np.unique(roots):
        members = np.flatnonzero(roots == root)
        survivors = members[~dropped[members]]
        if fixed[members].any():
            assert set(survivors) == set(members[fixed[members]])
        else:
            assert len(survivors) == 1                    # exactly one member kept
    # Without references the plain rule applies, e.g. oldest keeps the lowest id.
    if rule == "oldest":
        plain = clusters.representatives(roots, rank)
        assert all(plain[m] == np.flatnonzero(roots == roots[m]).min() for m in range(n))


@pytest.fixture
def corpus(tmp_path):
    """Real prompts and edited copies of some of them, as two files."""
    lines = seed_lines("prompts_filtered_4.0.txt", 400)
    copies = [lines[i].upper() + "!" for i in range(0, 40)] + [lines[i] for i in range(40, 60)]
    reordered = []
    for line in lines[60:80]:
        words = line.split()
        reordered.append(" ".join(words[1:] + words[:1]))
    first = write_lines(tmp_path / "first.txt", lines)
    second = write_lines(tmp_path / "second.txt", copies + reordered)
    return first, second, lines


def test_exact_and_simhash_keep_one_of_each_pair(corpus, invoke, store):
    first, second, lines = corpus
    invoke("01_collect", "text", first, second)
    result = invoke("03_dedup", "prompts", "--method", "simhash,exact")
    assert "exact dropped 60" in result.output and "simhash dropped 20" in result.output
    drops = dedup_drops(store)
    assert {rule for _, _, rule in drops} == {"exact", "simhash"}
    dropped = {item for item, _, _ in drops}
    assert all(rep not in dropped for _, rep, _ in drops)
    assert dropped == set(range(401, 481))                # the copies go, the originals (older) stay
    exact_scores = store.query("SELECT DISTINCT score FROM decisions WHERE rule = 'exact'")
    assert exact_scores == [{"score": 1.0}]
    assert store.scalar("SELECT max(score) FROM decisions WHERE rule = 'simhash'") <= 3
    again = invoke("03_dedup", "prompts", "--method", "exact,simhash")
    assert "methods up to date 2" in again.output and store.count("decisions") == 80
    report = invoke("03_dedup", "report").output
    assert "exact;keep=oldest" in report and "60 dropped" in report and "cluster of 2" in report


def test_keep_longest_and_source_priority(tmp_path, invoke, store):
    a = write_lines(tmp_path / "a.txt", ["a red fox in the snow", "a blue bird on a wire"])
    b = write_lines(tmp_path / "b.txt", ["A red fox in the snow!", "a blue bird on a wire, trending on artstation"])
    invoke("01_collect", "text", a, b)
    invoke("03_dedup", "prompts", "--method", "exact", "--keep", "source-priority", "--source-priority", "2,1")
    assert dedup_drops(store) == {(1, 3, "exact")}
    invoke("03_dedup", "prompts", "--method", "simhash", "--near-dup-bits", "16", "--keep", "longest")
    assert (2, 4, "simhash") in dedup_drops(store)


def test_new_prompts_are_compared_only_against_everything_kept(corpus, tmp_path, invoke, store):
    first, second, lines = corpus
    invoke("01_collect", "text", first)
    invoke("03_dedup", "prompts", "--method", "exact,simhash")
    assert store.count("decisions") == 0
    passes = store.query("SELECT * FROM dedup_passes ORDER BY scope")
    assert [p["items"] for p in passes] == [400, 400]
    invoke("01_collect", "text", second)
    result = invoke("03_dedup", "prompts", "--method", "exact,simhash")
    assert "exact compared 80" in result.output and "simhash compared 20" in result.output
    assert {item for item, _, _ in dedup_drops(store)} == set(range(401, 481))


def test_against_never_drops_a_reference_item(corpus, invoke, store):
    first, second, lines = corpus
    invoke("01_collect", "text", second, first)           # the copies come first: they are older
    invoke("03_dedup", "prompts", "--method", "exact,simhash", "--against", f"source:{first}")
    reference = {r["id"] for r in store.query("SELECT id FROM prompts WHERE source_id = 2")}
    drops = dedup_drops(store)
    assert len(drops) == 80
    assert not reference & {item for item, _, _ in drops}
    assert {rep for _, rep, _ in drops} <= reference


def test_bad_options_exit_2(tmp_path, invoke):
    db = tmp_path / "x.db"
    for args in (["--method", "fuzzy"], ["--source", "nope.txt"], ["--against", "split:none"],
                 ["--keep", "source-priority"]):
        result = run_script("03_dedup", "prompts", "--db", db, *args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_semantic_finds_paraphrases_and_caches_embeddings(tmp_path, invoke, store, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    lines = seed_lines("prompts_filtered_4.0.txt", 200)
    invoke("01_collect", "text", write_lines(tmp_path / "a.txt", lines))
    copies = [line.replace("A ", "An image of a ", 1) + ", highly detailed" for line in lines[:20]]
    invoke("01_collect", "text", write_lines(tmp_path / "b.txt", copies))
    result = invoke("03_dedup", "prompts", "--method", "semantic")
    assert "embeddings computed 220" in result.output
    scores = {(r["item_id"], r["representative_id"]): r["score"] for r in store.query(
        "SELECT item_id, representative_id, score FROM decisions WHERE rule = 'semantic'")}
    caught = [(201 + i, 1 + i) for i in range(20) if (201 + i, 1 + i) in scores]
    assert len(caught) >= 15 and all(scores[pair] >= 0.85 for pair in caught)
    assert not {rep for _, rep in scores} & {item for item, _ in scores}
    invoke("01_collect", "text", write_lines(tmp_path / "c.txt", ["a completely new prompt about teapots"]))
    again = invoke("03_dedup", "prompts", "--method", "semantic")
    assert "embeddings computed 0" not in again.output and "semantic compared 1" in again.output
    assert store.count("embeddings") == 221


def test_images_phash_finds_resized_copies(tmp_path, run, store):
    import io

    from PIL import Image

    from promptmill.collect.base import Collector, SourceInfo

    def png(image):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((128, 128))
                for _ in range(4)]
    collector = Collector(store, run, SourceInfo("test", "images", "sha"))
    for i, picture in enumerate(pictures):
        collector.add_image(i, png(picture), f"{i}.png")
    collector.add_image(10, png(pictures[0].resize((96, 96))), "small.png")
    collector.add_image(11, b"not an image at all", "broken.png")
    collector.finish(6)
    from click.testing import CliRunner

    from conftest import load_step

    cli = load_step("03_dedup").cli
    result = CliRunner().invoke(cli, ["images", "--db", str(store.path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "images unreadable 1" in result.output
    drops = dedup_drops(store)
    assert drops == {(5, 1, "phash")}
    assert store.count("images", "phash IS NOT NULL") == 5
    assert store.scalar("SELECT error FROM image_phashes WHERE image_id = 6")


def dedup_killed_beside_clean(tmp_path, files, args, kill_at: int):
    """FILES collected into two databases; 03_dedup ARGS run to the end on `clean` and SIGKILLed on `killed`
    once KILL_AT decisions are in. Returns (paths by name, the killed store)."""
    dbs = {}
    for name in ("clean", "killed"):
        dbs[name] = tmp_path / name / "p.db"
        assert run_script("01_collect", "text", *files, "--db", dbs[name]).returncode == 0
    assert run_script("03_dedup", *args, "--db", dbs["clean"]).returncode == 0
    process = subprocess.Popen([sys.executable, str(ROOT / "steps" / "03_dedup.py"), *args, "--db", dbs["killed"]],
                               env={**os.environ, "PROMPTMILL_PROGRESS": "0"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    store = open_store(dbs["killed"])
    deadline = time.time() + 120
    while store.count("decisions") < kill_at and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return dbs, store


@pytest.mark.slow
@pytest.mark.resilience
def test_sigkill_mid_run_then_rerun_matches_a_clean_run(tmp_path):
    if not SEED_PROMPTS.exists():
        pytest.skip("seed prompts missing")
    lines = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 20_000)
    copies = [line + ", trending on artstation" for line in lines[:4000]] + lines[4000:8000]
    files = [write_lines(tmp_path / "a.txt", lines), write_lines(tmp_path / "b.txt", copies)]
    args = ["prompts", "--method", "exact,simhash", "--batch-rows", "200"]
    dbs, store = dedup_killed_beside_clean(tmp_path, files, args, kill_at=1000)
    partial = store.count("decisions")
    assert 0 < partial < 8000
    assert run_script("03_dedup", *args, "--db", dbs["killed"]).returncode == 0
    clean = open_store(dbs["clean"])
    columns = "item_id, scope, rule, score, representative_id"
    query = f"SELECT {columns} FROM decisions ORDER BY item_id, scope"
    assert store.query(query) == clean.query(query)
    assert store.scalar("SELECT status FROM runs WHERE step = '03_dedup' ORDER BY id LIMIT 1") == "interrupted"
    store.close()
    clean.close()
