"""The Ray Data engine: work shards read by Ray, an actor pool runs the model, the driver writes.

``read_parquet(work shards).map_batches(Worker actor)`` loads the model once per actor
(on a GPU when the cluster has them); actors write image files straight to the
content-addressed blob store on shared storage and return small result rows, which
the driver commits batch by batch. Ray's own checkpointing is not used: a killed
driver loses only the batches in flight, and the next run plans what is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

from promptmill.core import errors
from promptmill.core.errors import BadInput
from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.store import Store
from promptmill.engine.base import Plan, Task, mark_done, open_shards

WORKER_ERROR = re.compile(r"promptmill\.core\.errors\.(BadInput|RunStopped|PromptmillError): (.+)")


class RayWorker:
    """One actor: the task's worker built once, fed pyarrow batches."""

    def __init__(self, task: dict):
        self.task = Task(**task)
        self.worker = self.task.module.Worker(self.task.spec)

    def __call__(self, batch):
        import pyarrow as pa

        return pa.Table.from_pylist(self.worker(batch.to_pylist()), schema=self.task.module.RESULT_SCHEMA)


def connect(address: str | None) -> None:
    """Join the cluster at ADDRESS (or $RAY_ADDRESS), else start a local Ray; a Ray already started is kept."""
    try:
        import ray
    except ImportError:
        raise BadInput("--engine ray needs Ray: pip install 'promptmill[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    # Our own bar and summary say how it goes; Ray Data's per-operator logging would drown them.
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def pool_size(workers: int | None, gpus_per_worker: float | None) -> tuple[int, float]:
    """(actors, GPUs each): by default one actor per GPU of the cluster, or one CPU actor."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus else 0.0
    if workers is None:
        workers = max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 1
    return workers, gpus_per_worker


@contextlib.contextmanager
def worker_errors():
    """A worker's own error (a model that won't load) comes out as itself, other Ray failures in one line.

    Ray reports an actor that died in its constructor by the text of the exception only."""
    import ray

    try:
        yield
    except ray.exceptions.RayError as exc:
        found = WORKER_ERROR.search(str(exc))
        if found:
            raise getattr(errors, found[1])(found[2].strip()) from None
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise errors.PromptmillError(f"--engine ray: {lines[-1] if lines else type(exc).__name__}") from exc


def run_ray(store: Store, run: Run, task: Task, plan: Plan, address: str | None = None, workers: int | None = None,
            num_gpus_per_worker: float | None = None) -> None:
    """Run the plan's open shards on Ray; commit each returned batch, and each shard's completion, here."""
    from dataclasses import asdict

    connect(address)
    import ray

    shards = open_shards(store, plan)
    if not shards:
        return
    actors, gpus = pool_size(workers, num_gpus_per_worker)
    remaining = {shard.index: shard.items for shard in shards}
    by_index = {shard.index: shard for shard in shards}
    shard_size = plan.shards[0].items  # keys are plan positions; every shard but the last is full
    # One block per batch, so results stream back (and are committed) batch by batch.
    blocks = -(-sum(remaining.values()) // task.batch_size)
    dataset = ray.data.read_parquet([str(shard.path) for shard in shards]).repartition(blocks).map_batches(
        RayWorker, fn_constructor_kwargs={"task": asdict(task)}, batch_size=task.batch_size,
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus or None)
    with bar(sum(remaining.values()), desc=f"{task.command} (ray)", unit="item") as progress, worker_errors():
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = batch.to_pylist()
            with store.transaction() as conn:
                task.module.commit(conn, run, task.spec, rows)
                for row in rows:
                    remaining[row["key"] // shard_size] -= 1
                for index in [i for i, left in remaining.items() if left == 0]:
                    mark_done(conn, run, by_index[index].id, "ray")
                    del remaining[index]
            progress.update(len(rows))
