#!/usr/bin/env python3
"""Run every benchmark and print one table: its figure, its baseline and the ratio between them.

Each benchmark script in this folder has a ``main(argv)`` that returns a dict
(or a list of dicts) with ``name``, ``figure``, ``baseline``, ``ratio`` and
``target``. ``--quick`` runs each one in its smoke-test size.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["collect_bench", "clean_bench", "dedup_speed", "dedup_quality", "scale_bench", "llm_throughput", "caption_bench", "generate_bench",
         "export_bench", "review_grid"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_one(name: str, quick: bool) -> list[dict]:
    module = load(name)
    started = time.perf_counter()
    result = module.main(["--quick"] if quick else [])
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        row.setdefault("name", name)
        row["seconds"] = round(time.perf_counter() - started, 1)
    return rows


def machine() -> str:
    cpus = os.cpu_count()
    return f"{platform.system()} {platform.machine()}, {cpus} CPU cores, Python {platform.python_version()}"


def format_ratio(value) -> str:
    return f"{value:.2f}x" if isinstance(value, (int, float)) else str(value or "")


def print_table(rows: list[dict]):
    header = ["benchmark", "figure", "baseline", "ratio", "target"]
    table = [[str(r.get("name", "")), str(r.get("figure", "")), str(r.get("baseline", "")),
              format_ratio(r.get("ratio")), str(r.get("target", ""))] for r in rows]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for line in table:
        print("| " + " | ".join(cell.replace("|", "/") for cell in line) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds, not minutes)")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(ORDER)})")
    args = parser.parse_args(argv)
    names = args.names or [name for name in ORDER if (HERE / f"{name}.py").exists()]
    rows, failed = [], 0
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(run_one(name, args.quick))
        except SystemExit as exc:  # a benchmark that can't run here (e.g. no CUDA) says why
            rows.append({"name": name, "figure": f"not run: {exc}"})
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows.append({"name": name, "figure": f"failed: {type(exc).__name__}: {exc}"})
            failed += 1
    print(f"\nMachine: {machine()}{' (quick sizes)' if args.quick else ''}\n")
    print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
