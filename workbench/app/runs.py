"""Runs of editing methods over edit cases (``eval``, ``compare``): kept on disk as they go, done
in this process or sharded over Ray workers.

A run is a list of ``MethodSpec`` over the same cases. Its settings (``run_settings``: the
command, the model's fingerprint, the cases' digest, each method with its resolved
hyperparameters, the MEND checkpoint, the statistics corpus, the dtype and the fluency length)
head its journal (``evaluation.journal``), so ``--resume`` continues only the run that wrote it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from workbench.app.workers import WorkerPlan, sharded_rows
from workbench.core.cases import EditCase
from workbench.editing.editor import Editor
from workbench.evaluation.compare import MethodSpec, compared_results, spec_editors, spec_edits
from workbench.evaluation.journal import CaseJournal
from workbench.evaluation.runner import case_rows, run_cases
from workbench.model.handle import ModelHandle
from workbench.model.loading import dtype_name


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is carried out: its output directory, ``resume`` or ``overwrite`` an interrupted
    run there, how many Ray ``workers`` (1: this process) and the Ray cluster ``address``."""

    out: str | Path
    resume: bool = False
    overwrite: bool = False
    workers: int = 1
    address: str | None = None

    @property
    def sharded(self) -> bool:
        return self.workers > 1 or self.address is not None


def cases_digest(cases: Sequence[EditCase]) -> str:
    """SHA-256 (first 16 hex digits) of the cases, every field and probe, in order."""
    text = json.dumps([dataclasses.asdict(case) for case in cases], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_settings(command: str, handle: ModelHandle, cases: Sequence[EditCase], specs: Sequence[MethodSpec],
                 editors: dict[str, Editor], checkpoint, stats_corpus, fluency_tokens: int) -> dict:
    """What decides a run's results (see the module docstring)."""
    return {"command": command, "model_fingerprint": handle.fingerprint(), "cases": cases_digest(cases),
            "n_cases": len(cases), "dtype": dtype_name(handle.bridge.cfg.dtype),
            "methods": [{"label": spec.label, "method": spec.method, "layer": spec.layer,
                         "hparams": dataclasses.asdict(editors[spec.label].hparams)} for spec in specs],
            "checkpoint": str(checkpoint) if checkpoint else None,
            "stats_corpus": str(stats_corpus) if stats_corpus else None, "fluency_tokens": fluency_tokens}


def run_specs(command: str, handle: ModelHandle, cases: Sequence[EditCase], specs: Sequence[MethodSpec],
              options: RunOptions, checkpoint=None, stats_corpus=None, fluency_tokens: int = 0,
              progress=True) -> tuple[dict[str, tuple[dict, list[dict]]], CaseJournal]:
    """Every spec over ``cases``, as ``compare.compare_methods`` gives it, with the run's journal in
    ``options.out`` (the caller closes it once the result files are written). Refused before any
    edit: a journal there without ``resume``, or one with other settings."""
    if not cases:
        raise ValueError("there are no edit cases to evaluate")
    editors = spec_editors(handle, specs, checkpoint, stats_corpus)
    settings = run_settings(command, handle, cases, specs, editors, checkpoint, stats_corpus, fluency_tokens)
    journal = CaseJournal(options.out, settings, resume=options.resume, overwrite=options.overwrite)
    description = f"{command}: {', '.join(spec.label for spec in specs)}"
    if options.sharded:
        plan = WorkerPlan(str(handle.source.location), str(handle.bridge.cfg.device), settings["dtype"],
                          tuple(specs), str(checkpoint) if checkpoint else None,
                          str(stats_corpus) if stats_corpus else None, fluency_tokens)
        rows = sharded_rows(cases, plan, journal, options.workers, options.address, progress, description)
    else:
        computes = spec_edits(specs, editors)
        rows = run_cases(cases, lambda case: case_rows(handle.bridge, case, computes, fluency_tokens),
                         progress, description, journal)
    return compared_results(rows, specs, editors, handle.bridge.cfg.n_layers, cases[0].source), journal
