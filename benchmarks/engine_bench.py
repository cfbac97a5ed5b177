#!/usr/bin/env python3
"""What --engine ray costs beside --engine local: its fixed cost and its overhead per image.

The same tiny-model generation (05_generate diffusers, tiny random SD, 2 steps,
32 px) runs for a small and a large number of prompts through both engines, each
into a fresh database. A straight line through the two timings gives each engine's
fixed cost (intercept: pipeline load, Ray's actor start, planning) and its cost per
image (slope); Ray's overhead is the difference. Ray runs one actor, as local runs
one process, on a local Ray started here (4 logical CPUs, no GPU). Each engine first makes
two images untimed, so imports and first calls are not counted as its fixed cost.

    python benchmarks/engine_bench.py                  # 200 and 2,000 images
    python benchmarks/engine_bench.py --quick          # 8 and 40 images (smoke test)
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # tiny_models
os.environ.setdefault("PROMPTMILL_PROGRESS", "0")


def invoke(*args) -> str:
    from click.testing import CliRunner

    from promptmill.cli import promptmill

    result = CliRunner().invoke(promptmill, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"promptmill {' '.join(map(str, args))} failed:\n{result.output}")
    return result.output


def timed_generation(folder: Path, model: Path, prompts: Path, count: int, engine: str, batch_size: int) -> float:
    db = folder / f"{engine}-{count}" / "p.db"
    invoke("collect", "text", "--db", db, prompts)
    started = time.perf_counter()
    output = invoke("generate", "diffusers", "--db", db, "--model", model, "--steps", 2, "--width", 32,
                    "--height", 32, "--batch-size", batch_size, "--limit", count, "--engine", engine,
                    *(["--workers", 1] if engine == "ray" else []))
    seconds = time.perf_counter() - started
    if f"images generated {count:,}" not in output:
        raise SystemExit(f"{engine}: expected {count} images, got: {output.strip()}")
    return seconds


def main(argv=None) -> dict:
    import ray
    import torch

    from tiny_models import build_all

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 and 40 images")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--images", type=int, default=2000, help="the large run (at most 2,000 example prompts)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    small, large = (8, 40) if args.quick else (args.small, args.images)

    torch.set_num_threads(1)  # the actor gets one thread too (Ray sets OMP_NUM_THREADS=1)
    if not ray.is_initialized():
        ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        tmp = Path(tmp)
        model = build_all(tmp / "models", ["tiny-sd"])["tiny-sd"]
        lines = (ROOT / "examples" / "prompts" / "diffusiondb_style.txt").read_text(encoding="utf-8").splitlines()
        if large > len(lines):
            raise SystemExit(f"--images {large}: the example file has {len(lines)} prompts")
        prompts = tmp / "prompts.txt"
        prompts.write_text("\n".join(lines[:large]) + "\n", encoding="utf-8")
        timings = {}
        for engine in ("local", "ray"):
            timed_generation(tmp / "warm-up", model, prompts, 2, engine, args.batch_size)  # imports, first calls
            timings[engine] = {n: timed_generation(tmp, model, prompts, n, engine, args.batch_size)
                               for n in (small, large)}
    fits = {}
    for engine, by_count in timings.items():
        per_image = (by_count[large] - by_count[small]) / (large - small)
        fits[engine] = (by_count[small] - per_image * small, per_image)
        print(f"{engine:5}: {small} images {by_count[small]:.1f} s, {large} images {by_count[large]:.1f} s -> "
              f"fixed {fits[engine][0]:.1f} s, {per_image * 1000:.2f} ms per image")
    fixed = fits["ray"][0] - fits["local"][0]
    per_item = (fits["ray"][1] - fits["local"][1]) * 1000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ray beside local: +{fixed:.1f} s fixed, {per_item:+.2f} ms per image; driver peak RSS {peak:.0f} MiB")
    return {"name": "engine",
            "figure": f"ray {large / timings['ray'][large]:.1f} images/s ({fixed:+.1f} s fixed, "
                      f"{per_item:+.2f} ms/image beside local)",
            "baseline": f"local {large / timings['local'][large]:.1f} images/s",
            "ratio": round(timings["local"][large] / timings["ray"][large], 2), "target": "overhead only"}


if __name__ == "__main__":
    main()
