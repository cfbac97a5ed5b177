#!/usr/bin/env python3
"""Millions of prompts through collect, dedup and split: each first run and its no-op re-run, with peak memory.

The prompts are every distinct seed prompt and edited copies of them (`dedup_peers.py`'s
generator), written to one text file and collected. Then `dedup prompts --method METHOD`
and `split assign` each run twice in a child process; the second run has nothing new to do.
A row per step gives the no-op re-run against the first run (the ratio) and both peaks
(VmHWM of the child). Targets: a re-run under 10 % of the first run, every peak under 1 GB.

    python benchmarks/scale_bench.py --prompts 5000000 --method exact,simhash
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dedup_peers  # noqa: E402

PEAK_TARGET_MB = 1000
RERUN_TARGET = 0.10
# The step in a child that, as it exits, writes its own peak resident memory (VmHWM, kB) to stderr.
PEAK_REPORTER = ("import atexit, runpy, sys; atexit.register(lambda: sys.stderr.write('\\n' + next(line for line in "
                 "open('/proc/self/status') if line.startswith('VmHWM')))); "
                 "sys.argv = ['promptmill'] + sys.argv[1:]; runpy.run_module('promptmill', run_name='__main__')")


def step(db: Path, *args: str) -> dict:
    """Run `promptmill ARGS --db DB`; its wall seconds, CPU seconds, peak MB and summary line."""
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0"}
    started, cpu = time.perf_counter(), os.times()
    result = subprocess.run([sys.executable, "-c", PEAK_REPORTER, *args, "--db", str(db)], env=env,
                            capture_output=True, text=True)
    wall, after = time.perf_counter() - started, os.times()
    if result.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    peak_kb = int(next(line for line in result.stderr.splitlines() if line.startswith("VmHWM")).split()[1])
    return {"wall_s": round(wall, 2),
            "cpu_s": round(after.children_user + after.children_system - cpu.children_user - cpu.children_system, 2),
            "peak_mb": round(peak_kb * 1024 / 1e6),
            "summary": [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("0")][-1]}


def write_prompts(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    folder = dedup_peers.SEED_DIR if dedup_peers.SEED_DIR.is_dir() else dedup_peers.EXAMPLE_PROMPTS
    originals = dedup_peers.load_originals(folder, rng)
    originals = originals[:max(1, min(len(originals), count // 2))]
    texts, _, _ = dedup_peers.build(originals, max(0, count - len(originals)), rng)
    rng.shuffle(texts)
    path.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")


def row(name: str, first: dict, again: dict) -> dict:
    ratio = again["wall_s"] / max(first["wall_s"], 1e-9)
    return {"name": name,
            "figure": f"no-op re-run {again['wall_s']:.2f} s wall, {again['cpu_s']:.2f} s CPU, {again['peak_mb']:,} MB peak",
            "baseline": f"first run {first['wall_s']:.1f} s wall, {first['cpu_s']:.1f} s CPU, {first['peak_mb']:,} MB peak",
            "ratio": round(ratio, 4), "target": f"< {RERUN_TARGET:.0%} of the first run, every peak < 1 GB",
            "met": ratio < RERUN_TARGET and max(first["peak_mb"], again["peak_mb"]) < PEAK_TARGET_MB,
            "first": first, "again": again}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=5_000_000)
    parser.add_argument("--method", default="exact,simhash", help="03_dedup --method (add --lexical-only via "
                                                                  "--dedup-option)")
    parser.add_argument("--dedup-option", action="append", default=[], help="more 03_dedup options")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20,000 prompts")
    args = parser.parse_args(argv)
    count = 20_000 if args.quick else args.prompts
    with tempfile.TemporaryDirectory(prefix="promptmill-scale-") as tmp:
        folder = Path(tmp)
        write_prompts(folder / "prompts.txt", count, args.seed)
        db = folder / "promptmill.db"
        collected = step(db, "collect", "text", str(folder / "prompts.txt"))
        dedup = ["dedup", "prompts", "--method", args.method, *args.dedup_option]
        rows = [row(f"03_dedup {args.method} {' '.join(args.dedup_option)}".strip() + f", {count:,} prompts",
                    step(db, *dedup), step(db, *dedup))]
        rows.append(row(f"08_split assign, {count:,} prompts", step(db, "split", "assign"), step(db, "split", "assign")))
    print(f"01_collect text, {count:,} prompts: {collected['wall_s']:.1f} s wall, {collected['peak_mb']:,} MB peak")
    for r in rows:
        print(f"{r['name']}: {r['figure']} vs {r['baseline']} ({r['ratio']:.2%}); "
              f"{'meets' if r['met'] else 'misses'} the target")
        print(f"  {r['first']['summary']}")
    print(json.dumps([{k: v for k, v in r.items() if k not in ("first", "again")} for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
