"""Engines for the model stages: plan the missing work, run it somewhere, write the results in the driver.

The database never leaves the driver. A :class:`Task` says what to do (a captioner
or a pipeline and its settings); its module (:data:`TASK_MODULES`) supplies the
three pieces every engine uses: ``plan_rows`` (missing work from SQLite),
``Worker`` (loads the model once, turns work rows into result rows, wherever it
runs) and ``commit`` (writes result rows under their natural keys).

The plan is a set of parquet work shards under ``<db folder>/work/<plan id>/``,
recorded in ``work_shards``. Results are committed one batch per transaction, and
the batch that finishes a shard records it in ``work_shard_done`` in the same
transaction. Resuming is planning again: only what has no row yet is planned.

Engines: :func:`run_local` (in process, shard after shard), :mod:`promptmill.engine.ray`
(an actor pool on a Ray cluster), and :func:`run_shard` + :func:`ingest` for
schedulers without Ray (a node writes result shards to a folder; the driver folds them in).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from importlib import import_module
from pathlib import Path

from promptmill.core import save
from promptmill.core.errors import BadInput
from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.store import Store

ENGINES = ("local", "ray")
TASK_MODULES = {"caption": "promptmill.caption.work", "generate": "promptmill.generate.work"}
SHARD_ROWS = 1024
NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"


@dataclass(frozen=True)
class Task:
    """What to run: its module, the step and command it belongs to, and a JSON spec for workers and commit."""

    kind: str
    step: str
    command: str
    params_hash: str
    spec: dict
    batch_size: int

    @property
    def module(self):
        return import_module(TASK_MODULES[self.kind])

    def writing_to(self, root: Path) -> Task:
        """The same task writing the files it makes (generated images) under ROOT; what it reads stays put."""
        if "write_blobs" not in self.spec:
            return self
        return Task(**{**asdict(self), "spec": {**self.spec, "write_blobs": str(root)}})


@dataclass(frozen=True)
class Shard:
    id: int
    index: int
    count: int
    items: int
    path: Path


@dataclass(frozen=True)
class Plan:
    id: str
    shards: list[Shard]


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N) with 0 <= K < N."""
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise BadInput(f"--shard {value}: expected K/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise BadInput(f"--shard {value}: K must be in 0..N-1")
    return index, count


def plan_work(store: Store, run: Run, task: Task, rows: list[dict], shard_count: int | None = None) -> Plan:
    """Cut ROWS (each with a 'key', in order) into parquet work shards and record them (idempotent).

    The plan id is the hash of the task and its keys, so planning the same missing work
    twice, here or on another node, gives the same plan."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = shard_count or max(1, -(-len(rows) // SHARD_ROWS))
    plan_id = save.params_hash({"step": task.step, "command": task.command, "params_hash": task.params_hash,
                                "shards": count, "keys": [row["key"] for row in rows]})
    folder = Path("work") / plan_id
    (store.path.parent / folder).mkdir(parents=True, exist_ok=True)
    size = -(-len(rows) // count) if rows else 0
    records = []
    for index in range(count):
        part = rows[index * size:(index + 1) * size]
        relative = folder / f"work-{index:05d}-of-{count:05d}.parquet"
        target = store.path.parent / relative
        if not target.exists():
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # nodes may plan at once
            table = pa.Table.from_pylist(part) if part else pa.table({"key": pa.array([], pa.int64())})
            pq.write_table(table, tmp)
            os.replace(tmp, target)
        records.append((plan_id, index, count, task.step, task.command, task.params_hash,
                        part[0]["key"] if part else None, part[-1]["key"] if part else None, len(part),
                        str(relative), run.id))
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO work_shards (plan_id, shard_index, shard_count, step, command, params_hash, first_key, "
            f"last_key, items, path, created_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {NOW}, ?) "
            "ON CONFLICT (plan_id, shard_index) DO NOTHING", records)
    shards = [Shard(row["id"], row["shard_index"], row["shard_count"], row["items"], store.path.parent / row["path"])
              for row in store.query("SELECT * FROM work_shards WHERE plan_id = ? ORDER BY shard_index", (plan_id,))]
    return Plan(plan_id, shards)


def open_shards(store: Store, plan: Plan) -> list[Shard]:
    """The plan's shards with items whose results are not in yet."""
    done = {row[0] for row in store.execute("SELECT shard_id FROM work_shard_done")}
    return [shard for shard in plan.shards if shard.items and shard.id not in done]


def read_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def mark_done(conn, run: Run, shard_id: int, engine: str) -> None:
    conn.execute(f"INSERT INTO work_shard_done (shard_id, engine, finished_at, run_id) VALUES (?, ?, {NOW}, ?) "
                 "ON CONFLICT (shard_id) DO NOTHING", (shard_id, engine, run.id))
    run.add("shards done")


def run_local(store: Store, run: Run, task: Task, plan: Plan) -> None:
    """The sequential in-process engine: every open shard, batch after batch, in this process."""
    shards = open_shards(store, plan)
    if not shards:
        return
    worker = task.module.Worker(task.spec)
    with bar(sum(s.items for s in shards), desc=task.command, unit="item") as progress:
        for shard in shards:
            rows = read_rows(shard.path)
            for start in range(0, len(rows), task.batch_size):
                results = worker(rows[start:start + task.batch_size])
                with store.transaction() as conn:
                    task.module.commit(conn, run, task.spec, results)
                    if start + task.batch_size >= len(rows):
                        mark_done(conn, run, shard.id, "local")
                progress.update(len(results))


# --- several machines without Ray: result shards in a folder, then ingest ---


def run_shard(store: Store, run: Run, task: Task, plan: Plan, index: int, out_dir: Path) -> Path:
    """Run shard INDEX of PLAN here and write its results under OUT_DIR (none go into the database).

    Files a worker makes (images) go to OUT_DIR/blobs; the result parquet is written
    first and its manifest last (temp + rename), so a manifest means a whole shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = plan.shards[index]
    folder = out_dir / plan.id
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"result-{shard.index:05d}-of-{shard.count:05d}"
    manifest = folder / f"{stem}.json"
    if manifest.exists():
        run.add("result shards already there")
        return manifest
    task = task.writing_to(out_dir / "blobs")
    worker = task.module.Worker(task.spec)
    rows = read_rows(shard.path) if shard.items else []
    results = []
    with bar(len(rows), desc=f"shard {shard.index}/{shard.count}", unit="item") as progress:
        for start in range(0, len(rows), task.batch_size):
            results += worker(rows[start:start + task.batch_size])
            progress.update(min(task.batch_size, len(rows) - start))
    table = pa.Table.from_pylist(results, schema=task.module.RESULT_SCHEMA)
    pq.write_table(table, folder / f"{stem}.parquet.tmp")
    os.replace(folder / f"{stem}.parquet.tmp", folder / f"{stem}.parquet")
    meta = {"plan_id": plan.id, "shard_index": shard.index, "shard_count": shard.count, "items": shard.items,
            "results": len(results), **asdict(task)}
    manifest.with_suffix(".tmp").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(manifest.with_suffix(".tmp"), manifest)
    run.add("items done", len(results))
    return manifest


def copy_blobs(source: Path, store: Store) -> int:
    """Files of a result folder's blob store that this store lacks (temp + rename; content-addressed)."""
    copied = 0
    for file in sorted(source.glob("*/*/*")):
        if file.name.startswith("."):
            continue
        target = store.blobs.root / file.relative_to(source)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-ingest-{file.name}"
        shutil.copyfile(file, tmp)
        os.replace(tmp, target)
        copied += 1
    return copied


def ingest(store: Store, run: Run, folder: Path) -> None:
    """Fold result shards written by --shard K/N into the database: each shard once, in one transaction.

    A shard must belong to a plan recorded here (same plan id, shard, step, command and
    parameters); any other is refused and recorded as an item error."""
    manifests = sorted(folder.glob("*/result-*-of-*.json"))
    if not manifests:
        raise BadInput(f"{folder}: no result shards (*/result-K-of-N.json) in this folder")
    if (folder / "blobs").is_dir():
        run.add("files copied", copy_blobs(folder / "blobs", store))
    for manifest in bar(manifests, desc="ingest", unit="shard") if len(manifests) > 50 else manifests:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        row = store.query("SELECT * FROM work_shards WHERE plan_id = ? AND shard_index = ?",
                          (meta["plan_id"], meta["shard_index"]))
        expected = {k: row[0][k] for k in ("shard_count", "step", "command", "params_hash", "items")} if row else None
        if expected != {k: meta[k] for k in ("shard_count", "step", "command", "params_hash", "items")}:
            with store.transaction() as conn:
                save.save_item_error(conn, run, "ingest: shard of a plan this database did not make",
                                     locator=str(manifest.relative_to(folder)),
                                     detail=f"plan {meta.get('plan_id')} shard {meta.get('shard_index')}")
            run.add("result shards refused")
            continue
        if store.scalar("SELECT 1 FROM work_shard_done WHERE shard_id = ?", (row[0]["id"],)):
            run.add("result shards already in")
            continue
        task = Task(**{key: meta[key] for key in ("kind", "step", "command", "params_hash", "spec", "batch_size")})
        results = read_rows(manifest.with_suffix(".parquet"))
        with store.transaction() as conn:
            task.module.commit(conn, run, task.spec, results)
            mark_done(conn, run, row[0]["id"], "ingest")
        run.add("result shards ingested")


def ray_options(f):
    """--engine and Ray's --address, --workers, --num-gpus-per-worker."""
    import click

    f = click.option("--num-gpus-per-worker", default=None, type=click.FloatRange(0),
                     help="Ray: GPUs per actor (default 1 when the cluster has GPUs, else 0).")(f)
    f = click.option("--workers", default=None, type=click.IntRange(1),
                     help="Ray: actors in the pool (default: one per GPU, else 1).")(f)
    f = click.option("--address", default=None, help="Ray: the cluster (default $RAY_ADDRESS, else a local Ray).")(f)
    return click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                        help="local: this process; ray: an actor pool on a Ray cluster, results written here.")(f)


def engine_options(f):
    """The Ray options plus --shard/--out-dir for schedulers without Ray."""
    import click

    f = click.option("--out-dir", type=click.Path(file_okay=False), help="With --shard: where result shards go.")(f)
    f = click.option("--shard", metavar="K/N", help="Run shard K of N of the plan and write results to --out-dir "
                     "(fold them in with `promptmill ingest DIR`).")(f)
    return ray_options(f)


def check_engine_options(engine: str, shard: str | None, out_dir: str | None) -> tuple[int, int] | None:
    parsed = parse_shard(shard)
    if (parsed is None) != (out_dir is None):
        raise BadInput("--shard K/N and --out-dir go together")
    if parsed and engine != "local":
        raise BadInput("--shard runs in this process: leave --engine at local")
    return parsed


def execute(store: Store, run: Run, task: Task, rows: list[dict], shard: tuple[int, int] | None,
            out_dir: str | None, ray_options: dict) -> None:
    """Plan ROWS and run them on Ray, or run one shard of them into OUT_DIR (`--engine local` without
    --shard is the step's own in-process loop, which needs no plan)."""
    if shard is not None:
        plan = plan_work(store, run, task, rows, shard[1])
        run_shard(store, run, task, plan, shard[0], Path(out_dir))
    elif rows:
        from promptmill.engine.ray import run_ray

        run_ray(store, run, task, plan_work(store, run, task, rows), **ray_options)
