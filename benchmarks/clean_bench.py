#!/usr/bin/env python3
"""02_clean prompts throughput: the kaggle-i2p preset end to end (read, judge, write decisions).

Baseline, in the same process on a copy of the same database: the same preset
without its ``requires`` speed hints, so every regex runs on every prompt.
Prompts are the seed prompts repeated to 1,000,000 (``--quick``: 20,000).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from promptmill.clean import prompts as cp
from promptmill.collect.base import Collector, SourceInfo
from promptmill.core.runs import start_run
from promptmill.core.store import open_store

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed-prompts"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prompts"


def seed_prompts() -> list[str]:
    folder = SEEDS if SEEDS.is_dir() else EXAMPLES
    return [line.strip() for path in sorted(folder.glob("*.txt"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_db(path: Path, n: int):
    lines = seed_prompts()
    store = open_store(path)
    with start_run(store, "bench", "collect", {}, argv=["bench"]) as run:
        collector = Collector(store, run, SourceInfo(kind="text", uri="bench", sha256="b" * 64))
        for position in range(n):
            collector.add_prompt(position, lines[position % len(lines)])
        collector.finish(n)
    store.close()


def timed_clean(path: Path, preset: cp.Preset) -> tuple[float, float]:
    """Wall and CPU seconds; CPU time is the fair figure on a machine shared with other jobs."""
    store = open_store(path)
    started, cpu_started = time.perf_counter(), time.process_time()
    with start_run(store, "bench", "clean", {}, argv=["bench"]) as run:
        cp.clean_prompts(store, run, preset)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    store.close()
    return seconds, cpu_seconds


def without_hints(preset_name: str) -> cp.Preset:
    spec = cp.tomllib.loads(cp.preset_path(preset_name).read_text())
    for rule in spec["rules"]:
        rule.pop("requires", None)
    return cp.build_preset(spec, "nohints0")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.n or (20_000 if args.quick else 1_000_000)
    os.environ.setdefault("PROMPTMILL_PROGRESS", "0")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        build_db(db, n)
        baseline_db = Path(tmp) / "baseline.db"
        with sqlite3.connect(db) as src, sqlite3.connect(baseline_db) as dst:
            src.backup(dst)
        seconds, cpu = timed_clean(db, cp.load_preset("kaggle-i2p"))
        _, baseline_cpu = timed_clean(baseline_db, without_hints("kaggle-i2p"))
    result = {
        "name": "clean_prompts kaggle-i2p",
        "figure": f"{n / cpu:,.0f} prompts per CPU-second ({n:,} in {cpu:.1f} s CPU, {seconds:.1f} s wall)",
        "baseline": f"{n / baseline_cpu:,.0f} prompts/s without speed hints",
        "ratio": round(baseline_cpu / cpu, 2),
        "target": ">= 1.2",
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
