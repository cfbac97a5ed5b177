#!/usr/bin/env python3
"""promptmill's near-duplicate methods and peer MinHash tools side by side, on the same edited prompts.

Real prompts from the seed files get edited copies, one edit kind per copy:
a content word swapped for another word of the corpus, a word dropped, a word
added, the comma-separated parts shuffled, a tag tail appended, case and
punctuation changed, a typo, or two edits at once. Every method clusters the
whole set; a pair is *true* when both texts come from the same original.
Recall is the share of true pairs that share a cluster (and, per edit kind, the
share of copies clustered with their original); precision is the share of
same-cluster pairs that are true. Speed is prompts per second of wall time for
the whole method: promptmill through `promptmill dedup prompts` on a database
already collected, the peers (installed into their own virtual environment,
never into promptmill's) from the text list to their clusters, each in its own
process so that its peak resident memory is its own.

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install rensa==0.5.0 datasketch==2.0.0
    python benchmarks/dedup_peers.py --peer-python /tmp/peers/bin/python             # 20k + 7k copies
    python benchmarks/dedup_peers.py --peer-python /tmp/peers/bin/python --total 1000000 --methods fast
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_DIR = ROOT.parent / "shared" / "data" / "seed-prompts"
EXAMPLE_PROMPTS = ROOT / "examples" / "prompts"
WORD = re.compile(r"\w+")
TAILS = [", trending on artstation, 8k", ", highly detailed, octane render", ", 4k, masterpiece, best quality",
         ", unreal engine, award winning", ", digital art, sharp focus, hd", ", cinematic lighting, artstation"]
EXTRA_WORDS = ["beautiful", "tiny", "ancient", "glowing", "dark", "colorful", "lonely", "giant", "misty", "golden"]
EDIT_KINDS = ["swap word", "drop word", "add word", "shuffle parts", "tag tail", "case and punctuation", "typo",
              "two edits"]
PROMPTMILL = {
    "promptmill exact,cascade": ["--method", "exact,cascade"],
    "promptmill exact,cascade --lexical-only": ["--method", "exact,cascade", "--lexical-only"],
    "promptmill exact,simhash (wordset k=3)": ["--method", "exact,simhash"],
}
PEERS = ["rensa MinHash LSH", "datasketch MinHash LSH"]
FAST = ["promptmill exact,cascade --lexical-only", "promptmill exact,simhash (wordset k=3)", "rensa MinHash LSH"]


# ---- the edited copies ------------------------------------------------------------------------

def load_originals(folder: Path, rng: random.Random) -> list[str]:
    """Distinct real prompts (by lower-cased words) of at least four words, shuffled."""
    seen, out = set(), []
    for file in sorted(folder.glob("*.txt")):
        for line in file.read_text(encoding="utf-8").splitlines():
            key = " ".join(WORD.findall(line.lower()))
            if len(key.split()) >= 4 and key not in seen:
                seen.add(key)
                out.append(line.strip())
    rng.shuffle(out)
    return out


def _edit(kind: str, text: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split()
    if not words:  # a first edit of two left nothing
        return rng.choice(EXTRA_WORDS)
    if kind == "swap word":
        content = [i for i, w in enumerate(words) if len(w.strip(",.")) > 3] or list(range(len(words)))
        i = rng.choice(content)
        words[i] = rng.choice(vocabulary) + ("," if words[i].endswith(",") else "")
    elif kind == "drop word":
        del words[rng.randrange(len(words))]
    elif kind == "add word":
        words.insert(rng.randrange(len(words) + 1), rng.choice(EXTRA_WORDS))
    elif kind == "shuffle parts":
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if len(parts) > 1:
            rng.shuffle(parts)
            return ", ".join(parts)
        return " ".join(words[len(words) // 2:] + words[:len(words) // 2])
    elif kind == "tag tail":
        return text.rstrip(" ,.") + rng.choice(TAILS)
    elif kind == "case and punctuation":
        changed = text.upper() if rng.random() < 0.3 else text.lower()
        return changed.replace(",", rng.choice([";", " ,", " -"])).rstrip(".") + rng.choice(["!", ".", "..."])
    elif kind == "typo":
        i = rng.choice([i for i, w in enumerate(words) if len(w) > 3] or [0])
        w = words[i]
        j = rng.randrange(max(len(w) - 1, 1))
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if len(w) > 1 else w + w
    return " ".join(words)


def edited(text: str, kind: str, rng: random.Random, vocabulary: list[str]) -> str:
    if kind == "two edits":
        first, second = rng.sample(EDIT_KINDS[:-1], 2)
        return _edit(second, _edit(first, text, rng, vocabulary), rng, vocabulary)
    return _edit(kind, text, rng, vocabulary)


def build(originals: list[str], copies: int, rng: random.Random) -> tuple[list[str], list[int], list[str]]:
    """(texts, family of each text, edit kind of each text) for the originals then `copies` copies;
    originals are copied round-robin, so past len(originals) a family has several copies."""
    vocabulary = sorted({w for t in originals[:20_000] for w in WORD.findall(t.lower()) if len(w) > 3})
    texts, family, kind = list(originals), list(range(len(originals))), ["original"] * len(originals)
    picks = list(range(len(originals)))
    rng.shuffle(picks)
    for n in range(copies):
        source = picks[n % len(picks)]
        edit = EDIT_KINDS[n % len(EDIT_KINDS)]
        copy = edited(originals[source], edit, rng, vocabulary)
        if len(WORD.findall(copy)) < 2:  # an edit left next to nothing: append a tag tail instead
            edit, copy = "tag tail", edited(originals[source], "tag tail", rng, vocabulary)
        texts.append(copy)
        family.append(source)
        kind.append(edit)
    return texts, family, kind


# ---- peers (run inside the peers' own environment) -----------------------------------------------

def _union_find(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(n)]


def run_peer(name: str, texts: list[str], threshold: float = 0.7, perms: int = 128) -> list[int]:
    """The usual recipe: word unigrams, MinHash LSH at `threshold`, exact Jaccard check, union-find."""
    sets = [set(WORD.findall(t.lower())) for t in texts]
    pairs = []
    if name.startswith("rensa"):
        from rensa import RMinHash, RMinHashLSH

        lsh = RMinHashLSH(threshold=threshold, num_perm=perms, num_bands=16)
        for i, words in enumerate(sets):
            sketch = RMinHash(num_perm=perms, seed=42)
            sketch.update(list(words))
            pairs += [(j, i) for j in lsh.query(sketch)]
            lsh.insert(i, sketch)
    else:
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=threshold, num_perm=perms)
        for i, words in enumerate(sets):
            sketch = MinHash(num_perm=perms)
            sketch.update_batch([w.encode() for w in words])
            pairs += [(j, i) for j in lsh.query(sketch)]
            lsh.insert(i, sketch)
    verified = [(a, b) for a, b in pairs if len(sets[a] & sets[b]) >= threshold * len(sets[a] | sets[b])]
    return _union_find(len(texts), verified)


def peer_main(name: str, input_path: Path, output_path: Path) -> None:
    texts = json.loads(input_path.read_text(encoding="utf-8"))
    started = time.perf_counter()
    labels = run_peer(name, texts)
    seconds = time.perf_counter() - started
    output_path.write_text(json.dumps({"labels": labels, "seconds": seconds}))


# ---- promptmill (through the step) ---------------------------------------------------------------

def _wait(command: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds, peak resident MB, exit code) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.stderr.write(process.stderr.read().decode(errors="replace")[-2000:])
    return time.perf_counter() - started, usage.ru_maxrss / 1024, process.returncode


def collected_db(texts: list[str], folder: Path, env: dict) -> Path:
    """A database holding `texts` as prompts 1..n (one source, one line each)."""
    source = folder / "prompts.txt"
    source.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    db = folder / "collected.db"
    subprocess.run([sys.executable, "-m", "promptmill", "collect", "text", str(source), "--db", str(db)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return db


def promptmill_labels(db: Path, n: int) -> list[int]:
    """Cluster label (line index of the kept prompt) of each line; a line collect rejected is alone."""
    import sqlite3

    conn = sqlite3.connect(db)
    representative = dict(conn.execute("SELECT item_id, representative_id FROM decisions WHERE stage = 'dedup' "
                                       "AND verdict = 'drop'"))
    line_of = dict(conn.execute("SELECT id, position - 1 FROM prompts"))
    conn.close()
    labels = list(range(-1, -n - 1, -1))
    for prompt_id, line in line_of.items():
        seen = 0
        while prompt_id in representative and seen < 100:  # an exact copy of an item a later pass dropped
            prompt_id, seen = representative[prompt_id], seen + 1
        labels[line] = line_of[prompt_id]
    return labels


# ---- scoring ----------------------------------------------------------------------------------------

def score(labels: list[int], family: list[int], kind: list[str], texts: list[str], rng: random.Random,
          show: int) -> dict:
    from collections import Counter

    pair_count = lambda c: c * (c - 1) // 2  # noqa: E731
    clusters = Counter(labels)
    families = Counter(family)
    cells = Counter(zip(labels, family))
    predicted = sum(pair_count(c) for c in clusters.values())
    true = sum(pair_count(c) for c in families.values())
    found = sum(pair_count(c) for c in cells.values())
    label_of_original = {f: labels[i] for i, (f, k) in enumerate(zip(family, kind)) if k == "original"}
    per_kind = {}
    for edit in EDIT_KINDS:
        members = [i for i, k in enumerate(kind) if k == edit]
        if members:
            per_kind[edit] = sum(labels[i] == label_of_original[family[i]] for i in members) / len(members)
    members_of: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        members_of.setdefault(label, []).append(i)
    false = [(members_of[lab][0], i) for lab, group in members_of.items() if len(group) > 1
             for i in group[1:] if family[i] != family[group[0]]]
    return {"recall": found / true if true else 1.0, "precision": found / predicted if predicted else 1.0,
            "per_kind": per_kind, "largest": max(clusters.values()),
            "false_links": [(texts[a], texts[b]) for a, b in rng.sample(false, min(show, len(false)))]}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--originals", type=int, default=20_000)
    parser.add_argument("--copies", type=int, default=7_000)
    parser.add_argument("--total", type=int, help="all distinct real prompts, copied round-robin up to TOTAL texts")
    parser.add_argument("--methods", default="all", help="'all', 'fast' or names separated by ';'")
    parser.add_argument("--peer-python", help="python of the environment the peers are installed in")
    parser.add_argument("--prompts", type=Path, default=SEED_DIR if SEED_DIR.is_dir() else EXAMPLE_PROMPTS)
    parser.add_argument("--quick", action="store_true", help="1,500 prompts and 500 copies, no MiniLM")
    parser.add_argument("--show-false", type=int, default=0, help="false links to print per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        peer_main(args.peer, args.input, args.output)
        return []

    if args.quick:
        args.originals, args.copies = 1_500, 500
        if args.methods == "all":
            args.methods = ";".join(m for m in list(PROMPTMILL) + PEERS if m != "promptmill exact,cascade")
    rng = random.Random(args.seed)
    originals = load_originals(args.prompts, rng)
    if not originals:
        raise SystemExit(f"no prompts in {args.prompts}/*.txt (give --prompts)")
    if args.total:
        texts, family, kind = build(originals, max(args.total - len(originals), 0), rng)
    else:
        texts, family, kind = build(originals[:args.originals], args.copies, rng)
    order = list(range(len(texts)))
    rng.shuffle(order)  # copies and originals interleaved, so 'oldest' is not always the original
    texts, family, kind = [texts[i] for i in order], [family[i] for i in order], [kind[i] for i in order]
    chosen = {"all": list(PROMPTMILL) + PEERS, "fast": FAST}.get(args.methods, args.methods.split(";"))
    if not args.peer_python:
        chosen = [m for m in chosen if m not in PEERS]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]),
           "PROMPTMILL_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dedup-peers-") as tmp:
        folder = Path(tmp)
        db = collected_db(texts, folder, env) if any(m in PROMPTMILL for m in chosen) else None
        (folder / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
        for method in chosen:
            if method in PROMPTMILL:
                copy = folder / "run.db"
                shutil.copy(db, copy)
                seconds, peak, code = _wait([sys.executable, "-m", "promptmill", "dedup", "prompts", "--db",
                                             str(copy), *PROMPTMILL[method]], env)
                labels = promptmill_labels(copy, len(texts))
                copy.unlink()
            else:
                out = folder / "labels.json"
                seconds, peak, code = _wait([args.peer_python, __file__, "--peer", method, "--input",
                                             str(folder / "texts.json"), "--output", str(out)], env)
                labels = json.loads(out.read_text())["labels"]
            if code:
                raise SystemExit(f"{method} failed with exit code {code}")
            result = score(labels, family, kind, texts, random.Random(1), args.show_false)
            rows.append({"method": method, "seconds": seconds, "peak_mb": peak,
                         "prompts_per_s": len(texts) / seconds, **result})
    print(f"{len(texts):,} texts ({sum(k != 'original' for k in kind):,} edited copies)")
    print("| method | recall | precision | " + " | ".join(EDIT_KINDS) + " | largest cluster | prompts/s | "
          "peak MB |")
    print("|---" * (6 + len(EDIT_KINDS)) + "|")
    for row in rows:
        kinds = " | ".join(f"{row['per_kind'].get(k, float('nan')):.2f}" for k in EDIT_KINDS)
        print(f"| {row['method']} | {row['recall']:.3f} | {row['precision']:.3f} | {kinds} | {row['largest']} | "
              f"{row['prompts_per_s']:,.0f} | {row['peak_mb']:,.0f} |")
    for row in rows:
        for a, b in row["false_links"]:
            print(f"FALSE {row['method']}: {a[:110]!r}  ~  {b[:110]!r}")
    return [{"name": f"dedup_peers {r['method']}", "figure": r["recall"], "baseline": r["precision"],
             "ratio": r["prompts_per_s"], "target": "recall >= 0.90 at precision >= 0.99"} for r in rows]


if __name__ == "__main__":
    main()
