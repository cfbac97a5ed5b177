#!/usr/bin/env python3
"""Dedup speed: simhash fingerprinting against the `simhash` package, and 1 M prompts through 03_dedup.

1. Fingerprints: for each feature kind (wordset, the default, then word, word2,
   char4), the package hashes ready-made features of the same prompts
   (``Simhash(features).value`` per prompt, tokenising not timed) and promptmill
   fingerprints the raw texts (tokenising timed), in this process; both results
   are checked equal. The line says which engine ran: the C extension
   (promptmill._simhash) when it was built, else numpy.
2. End to end: real prompts plus edited copies collected into a fresh database,
   then ``03_dedup prompts --method exact,simhash`` timed as a user runs it
   (read, hash, index, cluster, write decisions).
3. Semantic on the CPU: MiniLM prompts/s with torch, and with int8 dynamic
   quantisation of its linear layers (with the cosine agreement of the two).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dedup_quality  # noqa: E402

from promptmill.dedup import fingerprints  # noqa: E402


def corpus(size: int, rng: random.Random) -> list[str]:
    """Real prompts, then edited copies of them until `size` lines."""
    originals = dedup_quality.load_prompts(dedup_quality.SEED_DIR, max(1, size // 10), rng)
    vocabulary = [w for t in originals[:2000] for w in t.split() if w.isalpha()]
    edits = list(dedup_quality.EDITS.values())
    lines = list(originals)
    while len(lines) < size:
        source = originals[rng.randrange(len(originals))]
        lines.append(edits[len(lines) % len(edits)](source, rng, vocabulary) if rng.random() < 0.8 else source)
    return [line.replace("\n", " ") for line in lines[:size]]


def fingerprint_speed(texts: list[str], kind: str) -> dict:
    """Prompts/s of the package on ready-made features (its tokenising is not timed)
    and of promptmill from the raw text (tokenising included), checked equal."""
    import pyarrow.compute  # noqa: F401 - imported once per process, not per call: keep it out of the timing
    from scipy import sparse  # noqa: F401
    from simhash import Simhash

    features = [fingerprints.FEATURES[kind](t) for t in texts]
    started = time.perf_counter()
    reference = [Simhash(f).value for f in features]
    package_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = fingerprints.fingerprints(texts, kind)
    ours_s = time.perf_counter() - started
    assert [int(v) for v in ours] == reference, f"{kind} fingerprints differ from the package"
    return {"package": len(texts) / package_s, "ours": len(texts) / ours_s,
            "distinct": len(set(texts)) / len(texts)}


def step_speed(lines: list[str], workdir: Path) -> tuple[float, str]:
    path = workdir / "prompts.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = workdir / "db" / "bench.db"
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0", "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, str(ROOT / "steps" / "01_collect.py"), "text", str(path), "--db", str(db)],
                   check=True, env=env, capture_output=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "steps" / "03_dedup.py"), "prompts", "--method",
                           "exact,simhash", "--db", str(db)], check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done.stderr.strip().splitlines()[-1]


def semantic_speed(texts: list[str]) -> dict:
    import torch

    from promptmill.dedup import semantic

    torch.set_num_threads(2)
    model = semantic.load_model(device="cpu")
    model.encode(texts[:64])
    started = time.perf_counter()
    full = model.encode(texts, batch_size=64, normalize_embeddings=True)
    full_rate = len(texts) / (time.perf_counter() - started)
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    quantized.encode(texts[:64])
    started = time.perf_counter()
    small = quantized.encode(texts, batch_size=64, normalize_embeddings=True)
    small_rate = len(texts) / (time.perf_counter() - started)
    agreement = float(np.einsum("ij,ij->i", full, small).mean())
    return {"torch": full_rate, "int8": small_rate, "agreement": agreement}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 k prompts, no semantic model")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--fingerprint-sample", type=int, default=50_000)
    parser.add_argument("--semantic-sample", type=int, default=2_000)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.fingerprint_sample, args.semantic_sample = 20_000, 5_000, 0
    rng = random.Random(0)
    lines = corpus(args.size, rng)
    sample = lines[:args.fingerprint_sample]
    fingerprints.fingerprints(sample[:100], "char4")  # first-call set-up (Arrow kernels) out of the timing
    rates = {}
    for kind in ("wordset", "word", "word2", "char4"):
        rates[kind] = fingerprint_speed(sample, kind)
        print(f"fingerprints, {kind} features ({len(sample):,} prompts, {rates[kind]['distinct']:.0%} distinct): "
              f"package {rates[kind]['package']:,.0f}/s, promptmill ({fingerprints.engine()}) "
              f"{rates[kind]['ours']:,.0f}/s from text ({rates[kind]['ours'] / rates[kind]['package']:.1f}x)")
    default = rates["wordset"]
    with tempfile.TemporaryDirectory() as tmp:
        seconds, summary = step_speed(lines, Path(tmp))
    print(f"03_dedup prompts --method exact,simhash on {len(lines):,} prompts: {seconds:.1f} s\n  {summary}")
    if args.semantic_sample:
        speed = semantic_speed(lines[:args.semantic_sample])
        print(f"semantic MiniLM on CPU (2 threads): {speed['torch']:,.0f} prompts/s; int8 dynamic "
              f"{speed['int8']:,.0f} prompts/s (mean cosine to float {speed['agreement']:.4f})")
    return [
        {"name": "dedup_speed fingerprints", "figure": f"{default['ours']:,.0f} prompts/s (wordset, from text, {fingerprints.engine()})",
         "baseline": f"simhash package {default['package']:,.0f} prompts/s (same features)",
         "ratio": round(default["ours"] / default["package"], 1), "target": ">= 20"},
        {"name": "dedup_speed step", "figure": f"{len(lines):,} prompts in {seconds:.1f} s",
         "baseline": "60 s for 1 M prompts", "ratio": round(60 * len(lines) / 1e6 / seconds, 2),
         "target": ">= 1"},
    ]


if __name__ == "__main__":
    print(main())
