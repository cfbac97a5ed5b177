#!/usr/bin/env python3
"""Export throughput: images/s into an imagefolder and into parquet shards, against baselines run here.

- imagefolder baseline: the loop one writes by hand — one query, then per image a file copy, a
  json line, and a sha256 of the copied file for the manifest. promptmill does the same work plus
  the kept/split/provenance selection, the staging folder and the releases rows, but never
  re-reads an image to hash it (blobs are named by their sha256).
- parquet baseline: ``datasets.Dataset.from_list(...).cast_column("image", Image()).to_parquet()``
  on the same rows with the image bytes embedded, the usual way to produce such shards.

Cards are left out of both sides (a fixed cost of about a second of matplotlib).

``--prompts N`` measures ``promptmill upload prompts`` on N kept prompts instead: wall time and peak
memory of the real command in a subprocess, its no-op re-run, and as baseline the plain loop
``SELECT text FROM prompts`` -> one line each (time only; it writes no release).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PROMPTMILL_PROGRESS", "0")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def build_db(root: Path, images: int):
    from PIL import Image

    from promptmill.collect.base import Collector, SourceInfo
    from promptmill.core.runs import start_run
    from promptmill.core.store import open_store

    random.seed(0)
    store = open_store(root / "db" / "bench.db")
    with start_run(store, "01_collect", "bench", {}, argv=["bench"]) as run:
        collector = Collector(store, run, SourceInfo(kind="imagefolder", uri="bench", sha256="b" * 64))
        for n in range(images):
            image = Image.frombytes("RGB", (64, 64), random.randbytes(64 * 64 * 3))  # ~12 KB PNG, incompressible
            out = io.BytesIO()
            image.save(out, format="PNG")
            collector.add_image(n + 1, out.getvalue(), f"img/{n}.png", prompt=f"bench prompt number {n}, detailed")
        collector.finish(images)
    return store


def naive_imagefolder(store, out: Path) -> int:
    rows = store.query("SELECT i.sha256, i.ext, p.text FROM images i JOIN image_origins o ON o.image_id = i.id "
                       "LEFT JOIN prompts p ON p.id = o.prompt_id ORDER BY i.id")
    (out / "train").mkdir(parents=True)
    manifest = {}
    with open(out / "train" / "metadata.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            name = f"{row['sha256'][:16]}.{row['ext']}"
            shutil.copy(store.blobs.path_for(row["sha256"], row["ext"]), out / "train" / name)
            fh.write(json.dumps({"file_name": name, "text": row["text"]}) + "\n")
            manifest[name] = hashlib.sha256((out / "train" / name).read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return len(rows)


def datasets_parquet(store, out: Path) -> int:
    from datasets import Dataset, Image

    rows = [{"image": {"bytes": store.blobs.path_for(r["sha256"], r["ext"]).read_bytes(), "path": f"{r['sha256']}.png"},
             "text": r["text"]}
            for r in store.query("SELECT i.sha256, i.ext, p.text FROM images i JOIN image_origins o ON o.image_id = i.id "
                                 "LEFT JOIN prompts p ON p.id = o.prompt_id ORDER BY i.id")]
    out.mkdir(parents=True)
    Dataset.from_list(rows).cast_column("image", Image()).to_parquet(str(out / "train.parquet"))
    return len(rows)


def ours(store, out: Path, fmt: str) -> int:
    from promptmill.core.runs import start_run
    from promptmill.release.base import CardSettings, export, exporter_for

    exporter = exporter_for(fmt)({"text_from": "prompt", "splits": ()})
    with start_run(store, "09_upload", fmt, {}, argv=["bench"]) as run:
        return export(store, run, exporter, out, f"bench-{fmt}", CardSettings(enabled=False)).items


def build_prompt_db(root: Path, prompts: int) -> Path:
    """N distinct prompts in one text source, written in big batches (what 01_collect text stores)."""
    from promptmill.core.runs import start_run
    from promptmill.core.store import open_store

    path = root / "db" / "prompts.db"
    store = open_store(path)
    words = ["castle", "fox", "neon", "forest", "portrait", "ruins", "ocean", "dragon", "city", "garden"]
    with start_run(store, "01_collect", "bench", {}, argv=["bench"]) as run:
        with store.transaction() as conn:
            source_id = conn.execute("INSERT INTO sources (kind, uri, sha256, run_id) VALUES ('text', 'bench', ?, ?)",
                                     ("a" * 64, run.id)).lastrowid
        for start in range(0, prompts, 100_000):
            rows = [(source_id, n, f"a {words[n % 10]} and a {words[n // 10 % 10]}, detailed, number {n}", n, run.id)
                    for n in range(start, min(start + 100_000, prompts))]
            with store.transaction() as conn:
                conn.executemany("INSERT INTO prompts (source_id, position, text, norm_hash, run_id) "
                                 "VALUES (?, ?, ?, ?, ?)", rows)
    store.close()
    return path


def plain_prompt_lines(db: Path, out: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    out.mkdir(parents=True)
    n = 0
    with open(out / "prompts.txt", "w", encoding="utf-8") as fh:
        for (text,) in conn.execute("SELECT text FROM prompts ORDER BY id"):
            fh.write(" ".join(text.split()) + "\n")
            n += 1
    conn.close()
    return n


def upload_prompts(db: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak MiB) of `promptmill upload prompts` in a fresh process."""
    import subprocess

    script = ("import resource, runpy, sys; sys.argv = ['promptmill'] + sys.argv[1:]\n"
              "try:\n    runpy.run_module('promptmill', run_name='__main__')\n"
              "finally:\n    print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, "upload", "prompts", str(out), "--db", str(db), "--no-card"],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak_kib = int(next(line for line in done.stderr.splitlines() if line.startswith("peak ")).split()[1])
    return seconds, peak_kib / 1024


def prompt_bench(prompts: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        root = Path(tmp)
        db = build_prompt_db(root, prompts)
        _, base_s = timed(plain_prompt_lines, db, root / "baseline")
        first_s, first_mib = upload_prompts(db, root / "ours")
        again_s, again_mib = upload_prompts(db, root / "ours")
    row = {"name": "export prompts", "figure": f"{prompts / first_s:,.0f} prompts/s, peak {first_mib:,.0f} MiB",
           "baseline": f"{prompts / base_s:,.0f} prompts/s (SELECT text -> one line each, no release)",
           "ratio": round(base_s / first_s, 2), "target": "peak < 1 GiB",
           "no-op re-run": f"{again_s:.1f} s, peak {again_mib:,.0f} MiB", "prompts": prompts}
    print(f"{row['name']}: {row['figure']} vs {row['baseline']}: {row['ratio']:.2f}x; re-run {row['no-op re-run']} "
          f"({prompts:,} prompts)", file=sys.stderr)
    return [row]


def timed(fn, *args) -> tuple[int, float]:
    started = time.perf_counter()
    n = fn(*args)
    return n, time.perf_counter() - started


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="300 images, a few seconds")
    parser.add_argument("--prompts", type=int, default=0, help="Measure a prompt release of this many prompts instead.")
    args = parser.parse_args(argv)
    if args.prompts:
        return prompt_bench(args.prompts)
    images = 300 if args.quick else args.images
    import datasets  # noqa: F401 - imported before timing, like the export step's own imports

    results = []
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        root = Path(tmp)
        store = build_db(root, images)
        try:
            for fmt, baseline, baseline_name in (
                    ("imagefolder", naive_imagefolder, "copy + json line + sha256 per image"),
                    ("parquet", datasets_parquet, "datasets Dataset.from_list + Image + to_parquet")):
                n_base, base_s = timed(baseline, store, root / f"baseline-{fmt}")
                n_ours, ours_s = timed(ours, store, root / f"ours-{fmt}", fmt)
                assert n_base == n_ours == images
                ours_rate, base_rate = n_ours / ours_s, n_base / base_s
                row = {"name": f"export {fmt}", "figure": f"{ours_rate:,.0f} images/s",
                       "baseline": f"{base_rate:,.0f} images/s ({baseline_name})",
                       "ratio": round(ours_rate / base_rate, 2), "target": ">= 0.5", "images": images}
                print(f"{row['name']}: {row['figure']} vs {row['baseline']}: {row['ratio']:.2f}x "
                      f"({images:,} images)", file=sys.stderr)
                results.append(row)
        finally:
            store.close()
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
