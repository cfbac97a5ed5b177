#!/usr/bin/env python3
"""Review grid: time to render its first page (and a deep page) on a database of 100,000 images.

The database is built directly with SQL: every image has a stored row, a WD14-style caption
with tags, a CLIP score and a split; one in ten is a dedup drop. Pages are rendered by the
plugin through Datasette's in-process client (no network), review mode on, 50 tiles a page,
thumbnails not fetched (they load lazily and are cached on disk once made). Target: under 1 s.
The baseline is Datasette's own first page of the `images` table on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PROMPTMILL_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

TAGS = ["1girl", "solo", "landscape", "night", "snow", "red theme", "blue theme", "simple background", "outdoors",
        "portrait", "city", "forest", "water", "sky", "cat", "dog"]


def build(path: Path, images: int, seed: int = 0):
    from promptmill.core.runs import start_run
    from promptmill.core.store import open_store

    rng = random.Random(seed)
    store = open_store(path)
    with start_run(store, "benchmark", "review_grid", {"images": images}, argv=["review_grid"]) as run:
        with store.transaction() as conn:
            source = conn.execute("INSERT INTO sources (kind, uri, sha256, run_id) VALUES ('imagefolder', 'bench', "
                                  "'0', ?)", (run.id,)).lastrowid
            conn.executemany(
                "INSERT INTO images (id, sha256, ext, format, width, height, mode, bytes, run_id) "
                "VALUES (?, ?, 'png', 'PNG', ?, ?, 'RGB', ?, ?)",
                [(i, f"{i:064x}", rng.choice((512, 768, 1024)), rng.choice((512, 768, 1024)), rng.randint(10**4, 10**6),
                  run.id) for i in range(1, images + 1)])
            conn.executemany("INSERT INTO image_origins (image_id, source_id, position, locator, run_id) "
                             "VALUES (?, ?, ?, ?, ?)", [(i, source, i, f"img_{i}.png", run.id)
                                                        for i in range(1, images + 1)])
            conn.executemany(
                "INSERT INTO captions (id, image_id, kind, text, natural_key, created_at, run_id) "
                "VALUES (?, ?, 'wd14', ?, ?, '2026-01-01', ?)",
                [(i, i, ", ".join(rng.sample(TAGS, 5)), f"bench:{i}", run.id) for i in range(1, images + 1)])
            conn.execute("INSERT INTO tags (caption_id, tag, score, category, position) "
                         "SELECT c.id, j.value, 0.5, 'general', j.key FROM captions c, "
                         "json_each('[\"' || replace(c.text, ', ', '\",\"') || '\"]') j")
            conn.executemany("INSERT INTO scores (image_id, kind, value, natural_key, run_id) VALUES (?, 'clip', ?, ?, ?)",
                             [(i, rng.random() * 0.4, f"clip:{i}", run.id) for i in range(1, images + 1)])
            conn.executemany(
                "INSERT INTO decisions (item_type, item_id, stage, verdict, scope, value, representative_id, run_id) "
                "VALUES ('image', ?, ?, ?, ?, ?, ?, ?)",
                [(i, "split", "assign", "seed-0", "validation" if i % 10 == 0 else "train", None, run.id)
                 for i in range(1, images + 1)]
                + [(i, "dedup", "drop", "phash", None, i - 1, run.id) for i in range(2, images + 1, 10)])
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def render(datasette, url: str) -> tuple[float, int]:
    async def go():
        started = time.perf_counter()
        response = await datasette.client.get(url)
        assert response.status_code == 200, response.text[:300]
        return time.perf_counter() - started, len(re.findall(r'tabindex="0" data-id=', response.text))
    return asyncio.run(go())


def best_of(datasette, url: str, repeats: int) -> tuple[float, int]:
    results = [render(datasette, url) for _ in range(repeats)]
    return min(seconds for seconds, _ in results), results[0][1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 images")
    args = parser.parse_args(argv)
    images = 10_000 if args.quick else args.images
    os.environ["PROMPTMILL_REVIEW"] = "1"
    from datasette.app import Datasette

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "promptmill.db"
        started = time.perf_counter()
        build(path, images)
        print(f"built {images:,} images in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        datasette = Datasette([str(path)])
        baseline, _ = best_of(datasette, "/promptmill/images", args.repeats)
        rows = []
        for label, url in (("first page", "/-/review"), ("first page, tag filter", "/-/review?kind=wd14&tag=snow"),
                           ("first page, kept, by score", "/-/review?state=kept&sort=score&desc=1"),
                           ("a last page (keyset)", f"/-/review?after={images - 60}:{images - 60}")):
            seconds, tiles = best_of(datasette, url, args.repeats)
            rows.append({"name": f"review grid, {label} ({images:,} images)",
                         "figure": f"{seconds * 1000:.0f} ms ({tiles} tiles)",
                         "baseline": f"{baseline * 1000:.0f} ms (Datasette images table)",
                         "ratio": round(baseline / seconds, 2), "target": "< 1 s"})
    for row in rows:
        print(f"{row['name']}: {row['figure']}, baseline {row['baseline']}")
    return rows


if __name__ == "__main__":
    main()
