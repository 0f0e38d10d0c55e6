"""Edit cases sharded over Ray workers: each loads the model once and takes shards of cases.

``sharded_rows`` starts ``workers`` Ray actors (``CaseWorker``) on this machine, or joins the
Ray cluster at ``address``. Each actor opens the model once (one GPU each when the device is a
GPU; otherwise an equal share of the CPUs, as torch threads), builds the run's editors as the
driver does (``app.runs.spec_editors``) and answers shards of case indices with
``runner.case_rows``. The driver keeps every case's rows in the run's journal as they arrive, so
the result is the single-process run's (cases in their order, aggregated the same way; float
results may differ in the last bits where thread counts differ) and an interrupted sharded run
resumes like any other.

A worker that dies (its process killed, its node lost) is replaced by a new one and its shard is
done again; the journal records each case once, so nothing is counted twice. After
``MAX_WORKER_LOSSES`` lost workers the run stops with an error. An error raised by the evaluation
itself (a bad case, a method's refusal) stops the run with that error.

Ray is an optional extra: ``pip install -e ".[distributed]"``.
"""

from __future__ import annotations

import math
import os
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from workbench.core.cases import EditCase
from workbench.core.progress import Progress
from workbench.evaluation.compare import MethodSpec
from workbench.evaluation.journal import CaseJournal, RunInterrupted

MAX_WORKER_LOSSES = 3
SHARDS_PER_WORKER = 4  # shards per worker: small enough to balance, large enough to amortise a call


def require_ray():
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError('--workers and --ray-address need Ray: pip install -e ".[distributed]" '
                         "(or pip install ray)") from None
    return ray


@dataclass(frozen=True)
class WorkerPlan:
    """What a worker needs to rebuild the driver's run: the resolved model (a directory or a hub
    name), where and in what dtype to load it, the method specs with the run's MEND checkpoint and
    statistics corpus, and the fluency generation length."""

    model: str
    device: str
    dtype: str
    specs: tuple[MethodSpec, ...]
    checkpoint: str | None
    stats_corpus: str | None
    fluency_tokens: int


class CaseWorker:
    """The body of one Ray actor: the model and editors of ``plan``, loaded once."""

    def __init__(self, plan: WorkerPlan, threads: int):
        import torch

        from workbench.evaluation.compare import spec_editors, spec_edits
        from workbench.model.handle import open_model

        torch.set_num_threads(threads)
        self.handle = open_model(plan.model, device=plan.device, dtype=plan.dtype, progress=False)
        editors = spec_editors(self.handle, plan.specs, plan.checkpoint, plan.stats_corpus)
        self.computes = spec_edits(plan.specs, editors)
        self.fluency_tokens = plan.fluency_tokens

    def rows(self, shard: list[tuple[int, EditCase]]) -> list[tuple[int, dict]]:
        """Every case of ``shard`` (index, case) as ``runner.case_rows`` gives it."""
        from workbench.evaluation.runner import case_rows

        return [(index, case_rows(self.handle.bridge, case, self.computes, self.fluency_tokens))
                for index, case in shard]

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


def sharded_rows(cases: Sequence[EditCase], plan: WorkerPlan, journal: CaseJournal, workers: int,
                 address: str | None = None, progress: Progress = True,
                 description: str = "evaluating edits") -> list[dict[str, dict]]:
    """``runner.run_cases``' result with the cases shared among ``workers`` Ray actors (see the
    module docstring); cases ``journal`` already holds are not done again."""
    ray = require_ray()
    started = start_ray(ray, address)
    try:
        return _run_shards(ray, cases, plan, journal, workers, progress, description)
    except KeyboardInterrupt:
        raise RunInterrupted(journal.interrupted_message(len(cases))) from None
    finally:
        if started:
            ray.shutdown()


def _actor_options(ray, plan: WorkerPlan, workers: int) -> tuple[dict, int]:
    """Ray options of one actor and its torch thread count."""
    if plan.device.startswith("cuda"):
        return {"num_gpus": 1, "num_cpus": 1}, 1
    cpus = int(ray.available_resources().get("CPU", os.cpu_count() or 1))
    share = max(1, cpus // workers)
    return {"num_cpus": share}, share


def _run_shards(ray, cases, plan, journal, workers, progress, description):
    options, threads = _actor_options(ray, plan, workers)
    actor_class = ray.remote(**options)(CaseWorker)
    pending = deque(shards_of([i for i in range(len(cases)) if i not in journal.done], workers))
    actors = [actor_class.remote(plan, threads) for _ in range(min(workers, len(pending)))]
    try:
        ray.get([actor.pid.remote() for actor in actors])
    except ray.exceptions.RayActorError as error:
        raise RuntimeError(f"a Ray worker could not load the model and its editors: {error}") from None
    idle, in_flight, losses = list(range(len(actors))), {}, 0
    report = _reporter(progress, description, len(cases), len(journal.done))
    while pending or in_flight:
        while idle and pending:
            slot, shard = idle.pop(), pending.popleft()
            in_flight[actors[slot].rows.remote([(i, cases[i]) for i in shard])] = (slot, shard)
        [ready], _ = ray.wait(list(in_flight), num_returns=1)
        slot, shard = in_flight.pop(ready)
        try:
            answered = ray.get(ready)
        except ray.exceptions.RayActorError as error:
            losses += 1
            if losses > MAX_WORKER_LOSSES:
                raise RuntimeError(f"{losses} Ray workers were lost; the last: {error}") from error
            print(f"workbench: a Ray worker was lost; its shard of {len(shard)} cases is done again by a new one",
                  file=sys.stderr)
            actors[slot] = actor_class.remote(plan, threads)
            pending.appendleft(shard)
        except ray.exceptions.RayTaskError as error:
            raise error.as_instanceof_cause() from None
        else:
            for index, rows in answered:
                journal.record(index, rows)
            report(len(journal.done))
        idle.append(slot)
    report(None)
    return [journal.done[index] for index in range(len(cases))]


def _reporter(progress: Progress, description: str, total: int, done: int):
    """A function of the number of cases done (None: finished) that reports as ``progress`` asks."""
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
