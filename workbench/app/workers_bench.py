"""``workbench bench workers``: the same evaluation with one Ray worker and with several, timed in
one run.

Each side starts its workers (every worker loads the model), evaluates the same cases with the
same method and stops them; ``seconds`` is that whole wall time, ``ready_seconds`` the part spent
before the first case could start (starting Ray's workers and loading the model). With W workers
on a machine of C CPUs each worker runs C // W torch threads, so one worker uses every CPU too and
the ratio says what sharding adds over threads. ``speedup_W_vs_1`` is the one-worker time over the
W-worker time; the case results of both sides must agree (``max_metric_difference``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from workbench.app.runs import EditJob, model_of
from workbench.app.workers import require_ray, sharded_rows, start_ray
from workbench.core.cases import EditCase
from workbench.core.journal import CaseJournal
from workbench.evaluation.compare import MethodSpec
from workbench.model.handle import ModelHandle
from workbench.model.precision import cpu_name


def bench_workers(handle: ModelHandle, cases: Sequence[EditCase], spec: MethodSpec, workers: int = 2,
                  address: str | None = None) -> dict:
    """Time ``spec``'s evaluation of ``cases`` with 1 and with ``workers`` Ray workers (module docstring)."""
    if workers < 2:
        raise ValueError(f"bench workers compares 1 worker with more: give --workers 2 or more, not {workers}")
    if not cases:
        raise ValueError("bench workers needs at least one edit case")
    ray = require_ray()
    started_ray = start_ray(ray, address)
    job = EditJob(**model_of(handle), specs=(spec,), checkpoint=None, stats_corpus=None, fluency_tokens=0)
    try:
        sides = {count: _timed(job, cases, count) for count in (1, workers)}
    finally:
        if started_ray:
            ray.shutdown()
    one, many = sides[1], sides[workers]
    difference = max(abs(a - b) for row_a, row_b in zip(one["rows"], many["rows"])
                     for a, b in zip(_metrics(row_a, spec), _metrics(row_b, spec)))
    return {"method": spec.label, "n_cases": len(cases), "cpus": os.cpu_count(), "cpu": cpu_name(),
            "device": job.device, "workers": workers,
            "workers_1_s": one["seconds"], f"workers_{workers}_s": many["seconds"],
            "workers_1_ready_s": one["ready_seconds"], f"workers_{workers}_ready_s": many["ready_seconds"],
            f"speedup_{workers}_vs_1": one["seconds"] / many["seconds"], "max_metric_difference": difference}


def _timed(job: EditJob, cases: Sequence[EditCase], workers: int) -> dict:
    ready = []

    def note_first_report(description, done, total):
        if not ready:
            ready.append(time.perf_counter())

    started = time.perf_counter()
    rows = sharded_rows(cases, job, CaseJournal.in_memory(), workers, progress=note_first_report)
    finished = time.perf_counter()
    return {"seconds": finished - started, "ready_seconds": ready[0] - started, "rows": rows}


def _metrics(row: dict, spec: MethodSpec) -> list[float]:
    return [value for value in row[spec.label]["metrics"].values() if value is not None]
