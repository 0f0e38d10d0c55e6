"""Work over many items (edit cases, facts to trace, layer and case pairs) sharded over Ray
workers: each loads the model once and takes shards of items.

``sharded_rows`` starts ``workers`` Ray actors (``WorkbenchWorker``) on this machine, or joins
the Ray cluster at ``address``. Each actor opens the job's model once (one GPU each when the
device is a GPU; otherwise an equal share of the CPUs, as torch threads) and answers shards of
items with the function the job prepares from it (``app.runs``: ``EditJob``, ``TraceJob``,
``SweepJob``), the function the driver uses when it works alone. The driver keeps every item's
rows in the run's journal as they arrive, so the result is the single-process run's (items in
their order, aggregated the same way; float results may differ in the last bits where thread
counts differ) and an interrupted sharded run resumes like any other.

A worker that dies (its process killed, its node lost) is replaced by a new one and its shard is
done again; the journal records each item once, so nothing is counted twice. After
``MAX_WORKER_LOSSES`` lost workers the run stops with an error (``WorkersFailed``). An error
raised by the work itself (a bad case, a method's refusal) stops the run with that error.

Ray is an optional extra: ``pip install -e ".[distributed]"``.
"""

from __future__ import annotations

import math
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from tqdm.auto import tqdm

from workbench.core.journal import CaseJournal, RunInterrupted
from workbench.core.progress import Progress

MAX_WORKER_LOSSES = 3
SHARDS_PER_WORKER = 4  # shards per worker: small enough to balance, large enough to amortise a call


class WorkersFailed(RuntimeError):
    """The Ray workers could not do the run: one could not load the model, or too many were lost."""


def require_ray():
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError('--workers and --ray-address need Ray: pip install -e ".[distributed]" '
                         "(or pip install ray)") from None
    return ray


class Job(Protocol):
    """What a worker does: load ``model`` (a directory or a hub name) on ``device`` in ``dtype``,
    then answer items with the function ``prepare`` makes from the model's handle."""

    model: str
    device: str
    dtype: str

    def prepare(self, handle) -> Callable[[object], dict]: ...


class WorkbenchWorker:
    """The body of one Ray actor: the model of ``job``, loaded once, and the job's function."""

    def __init__(self, job: Job, threads: int):
        import torch

        from workbench.model.handle import open_model

        torch.set_num_threads(threads)
        device = "cuda" if job.device.startswith("cuda") else job.device  # Ray shows each actor its own GPU
        self.rows_of = job.prepare(open_model(job.model, device=device, dtype=job.dtype, progress=False))

    def rows(self, shard: list[tuple[int, object]]) -> list[tuple[int, dict]]:
        """``(index, rows)`` of every ``(index, item)`` of ``shard``."""
        return [(index, self.rows_of(item)) for index, item in shard]

    def pid(self) -> int:
        return os.getpid()


def shards_of(indices: Sequence[int], workers: int) -> list[list[int]]:
    """``indices`` cut into consecutive shards, about ``SHARDS_PER_WORKER`` per worker."""
    size = max(1, math.ceil(len(indices) / (workers * SHARDS_PER_WORKER)))
    return [list(indices[start:start + size]) for start in range(0, len(indices), size)]


def start_ray(ray, address: str | None) -> bool:
    """Join the cluster at ``address`` or start a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return True


def sharded_rows(items: Sequence, job: Job, journal: CaseJournal, workers: int, address: str | None = None,
                 progress: Progress = True, description: str = "evaluating edits") -> list[dict]:
    """``runner.run_items(items, job.prepare(handle), ...)``'s result with the items shared among
    ``workers`` Ray actors (see the module docstring); items ``journal`` already holds are not done
    again."""
    ray = require_ray()
    started = start_ray(ray, address)
    try:
        return _run_shards(ray, items, job, journal, workers, progress, description)
    except KeyboardInterrupt:
        raise RunInterrupted(journal.interrupted_message(len(items))) from None
    finally:
        if started:
            ray.shutdown()


def _actor_options(ray, job: Job, workers: int) -> tuple[dict, int]:
    """Ray options of one actor and its torch thread count."""
    if job.device.startswith("cuda"):
        return {"num_gpus": 1, "num_cpus": 1}, 1
    cpus = int(ray.available_resources().get("CPU", os.cpu_count() or 1))
    share = max(1, cpus // workers)
    return {"num_cpus": share}, share


def _run_shards(ray, items, job, journal, workers, progress, description):
    options, threads = _actor_options(ray, job, workers)
    actor_class = ray.remote(**options)(WorkbenchWorker)
    pending = deque(shards_of([i for i in range(len(items)) if i not in journal.done], workers))
    actors = [actor_class.remote(job, threads) for _ in range(min(workers, len(pending)))]
    try:
        ray.get([actor.pid.remote() for actor in actors])
    except ray.exceptions.RayActorError as error:
        raise WorkersFailed(f"a Ray worker could not load the model or prepare its work: {error}") from None
    idle, in_flight, losses = list(range(len(actors))), {}, 0
    report = _reporter(progress, description, len(items), len(journal.done))
    while pending or in_flight:
        while idle and pending:
            slot, shard = idle.pop(), pending.popleft()
            in_flight[actors[slot].rows.remote([(i, items[i]) for i in shard])] = (slot, shard)
        [ready], _ = ray.wait(list(in_flight), num_returns=1)
        slot, shard = in_flight.pop(ready)
        try:
            answered = ray.get(ready)
        except ray.exceptions.RayActorError as error:
            losses += 1
            if losses > MAX_WORKER_LOSSES:
                raise WorkersFailed(f"{losses} Ray workers were lost; the last: {error}") from error
            print(f"workbench: a Ray worker was lost; its shard of {len(shard)} items is done again by a new one",
                  file=sys.stderr)
            actors[slot] = actor_class.remote(job, threads)
            pending.appendleft(shard)
        except ray.exceptions.RayTaskError as error:
            raise error.as_instanceof_cause() from None
        else:
            for index, rows in answered:
                journal.record(index, rows)
            report(len(journal.done))
        idle.append(slot)
    report(None)
    return [journal.done[index] for index in range(len(items))]


def _reporter(progress: Progress, description: str, total: int, done: int):
    """A function of the number of items done (None: finished) that reports as ``progress`` asks."""
    if callable(progress):
        progress(description, done, total)
        return lambda count: None if count is None else progress(description, count, total)
    bar = tqdm(total=total, initial=done, desc=description, disable=not progress)

    def report(count):
        if count is None:
            bar.close()
        else:
            bar.update(count - bar.n)
    return report
