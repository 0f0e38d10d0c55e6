"""Runs over many items, kept on disk as they go and done in this process or sharded over Ray
workers: editing methods over edit cases (``eval``, ``compare``), traces of many facts (``trace
average``) and layer sweeps (``locate --sweep``).

A run is a job (``EditJob``, ``TraceJob``, ``SweepJob``: the model to load and how to turn one
item into its rows) over a list of items. Its settings (what decides its results: the command, the model's
fingerprint and dtype, the items' digest, the methods with their resolved hyperparameters, the
trace's configuration and seed, or the sweep's method and layers) head its journal
(``core.journal``), so ``--resume`` continues only the run that wrote it. ``run_job`` runs a job
in this process or, with ``workers`` or a Ray address, over Ray workers (``app.workers``); both
give the same rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from workbench.app.workers import sharded_rows
from workbench.core.cases import EditCase
from workbench.core.journal import CaseJournal, run_items
from workbench.editing.editor import Editor
from workbench.evaluation.compare import MethodSpec, compared_results, spec_editor, spec_editors, spec_edits
from workbench.evaluation.runner import batch_records, case_rows, summarize
from workbench.evaluation.sweep import sweep_item_rows
from workbench.model.handle import ModelHandle
from workbench.model.loading import dtype_name
from workbench.tracing.average import trace_nth_fact
from workbench.tracing.trace import TraceConfig


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is carried out: its ``journal`` file (``core.journal.journal_path``; None: kept in
    memory only), ``resume`` or ``overwrite`` an interrupted run there, how many Ray ``workers``
    (1: this process) and the Ray cluster ``address``."""

    journal: str | Path | None
    resume: bool = False
    overwrite: bool = False
    workers: int = 1
    address: str | None = None

    @property
    def sharded(self) -> bool:
        return self.workers > 1 or self.address is not None


@dataclasses.dataclass(frozen=True)
class EditJob:
    """Edit cases with every method spec, each case measured once before (``runner.case_rows``):
    rows ``{spec label: record}``."""

    model: str
    device: str
    dtype: str
    specs: tuple[MethodSpec, ...]
    checkpoint: str | None
    stats_corpus: str | None
    fluency_tokens: int

    def prepare(self, handle: ModelHandle) -> Callable[[EditCase], dict]:
        edits = spec_edits(self.specs, spec_editors(handle, self.specs, self.checkpoint, self.stats_corpus))
        return lambda case: case_rows(handle.bridge, case, edits, self.fluency_tokens)


@dataclasses.dataclass(frozen=True)
class BatchEditJob:
    """Edit batches of cases (lists of ``EditCase``), each batch at once with ``spec``'s editor
    (``Editor.edit_batch``, ``runner.batch_records``): rows ``{"cases": [record, ...]}``."""

    model: str
    device: str
    dtype: str
    spec: MethodSpec
    checkpoint: str | None
    stats_corpus: str | None
    fluency_tokens: int

    def prepare(self, handle: ModelHandle) -> Callable[[list[EditCase]], dict]:
        editor = spec_editor(handle, self.spec, self.checkpoint, self.stats_corpus)
        layer = self.spec.layer
        return lambda batch: {"cases": batch_records(handle.bridge, batch,
                                                     lambda cases: editor.edit_batch(cases, layer),
                                                     self.fluency_tokens)}


@dataclasses.dataclass(frozen=True)
class TraceJob:
    """Trace facts (``(index, fact dict)``) with ``config``, as ``average.average_trace`` does
    (``average.trace_nth_fact``): rows ``{"trace": TraceResult.to_dict()}``."""

    model: str
    device: str
    dtype: str
    config: TraceConfig
    seed: int

    def prepare(self, handle: ModelHandle) -> Callable[[tuple[int, dict]], dict]:
        return lambda item: {"trace": trace_nth_fact(handle.bridge, *item, self.config, self.seed).to_dict()}


@dataclasses.dataclass(frozen=True)
class SweepJob:
    """Edit ``(layer, case)`` items with ``method`` at the item's layer (``sweep.sweep_item_rows``)."""

    model: str
    device: str
    dtype: str
    method: str
    hparams: str | None
    stats_corpus: str | None

    def prepare(self, handle: ModelHandle) -> Callable[[tuple[int, EditCase]], dict]:
        editor = Editor.for_model(handle, self.method, self.hparams, stats_corpus=self.stats_corpus)
        return lambda item: sweep_item_rows(handle.bridge, editor, item)


def model_of(handle: ModelHandle) -> dict:
    """A job's ``model``, ``device`` and ``dtype`` fields for the handle's model."""
    return {"model": str(handle.source.location), "device": str(handle.bridge.cfg.device),
            "dtype": dtype_name(handle.bridge.cfg.dtype)}


def digest(items: Sequence) -> str:
    """SHA-256 (first 16 hex digits) of the items (JSON values and dataclasses, nested in any way), in order."""
    def plain(value):
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)

    text = json.dumps(list(items), sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _named(path: str | Path | None) -> str | None:
    return str(path) if path else None


def edit_settings(command: str, specs: Sequence[MethodSpec], editors: dict[str, Editor], job) -> dict:
    """The settings of an edit run (``EditJob``, ``BatchEditJob``): the command, each method with its
    resolved hyperparameters, the MEND checkpoint, the statistics corpus and the fluency length."""
    return {"command": command, "fluency_tokens": job.fluency_tokens, "checkpoint": job.checkpoint,
            "stats_corpus": job.stats_corpus,
            "methods": [{"label": spec.label, "method": spec.method, "layer": spec.layer,
                         "hparams": dataclasses.asdict(editors[spec.label].hparams)} for spec in specs]}


def run_job(job, handle: ModelHandle, items: Sequence, settings: dict, options: RunOptions,
            description: str, progress=True) -> tuple[list[dict], CaseJournal]:
    """Every item's rows, in item order, with the run's journal at ``options.journal`` (the caller
    closes it once the result files are written). ``settings`` gain the model's fingerprint, its
    dtype and the items' digest. Refused before any work: a journal there without ``resume``, or
    one with other settings."""
    settings = {**settings, "model_fingerprint": handle.fingerprint(), "dtype": job.dtype,
                "items": digest(items), "n_items": len(items)}
    journal = CaseJournal(options.journal, settings, resume=options.resume, overwrite=options.overwrite)
    if options.sharded:
        rows = sharded_rows(items, job, journal, options.workers, options.address, progress, description)
    else:
        rows = run_items(items, job.prepare(handle), progress, description, journal)
    return rows, journal


def run_specs(command: str, handle: ModelHandle, cases: Sequence[EditCase], specs: Sequence[MethodSpec],
              options: RunOptions, checkpoint=None, stats_corpus=None, fluency_tokens: int = 0,
              progress=True) -> tuple[dict[str, tuple[dict, list[dict]]], CaseJournal]:
    """Every spec over ``cases``, as ``compare.compare_methods`` gives it, through ``run_job``."""
    if not cases:
        raise ValueError("there are no edit cases to evaluate")
    editors = spec_editors(handle, specs, checkpoint, stats_corpus)
    job = EditJob(**model_of(handle), specs=tuple(specs), checkpoint=_named(checkpoint),
                  stats_corpus=_named(stats_corpus), fluency_tokens=fluency_tokens)
    settings = edit_settings(command, specs, editors, job)
    rows, journal = run_job(job, handle, cases, settings, options, f"{command}: "
                            + ", ".join(spec.label for spec in specs), progress)
    return compared_results(rows, specs, editors, handle.bridge.cfg.n_layers, cases[0].source), journal


def run_batches(handle: ModelHandle, cases: Sequence[EditCase], spec: MethodSpec, batch_size: int,
                options: RunOptions, checkpoint=None, stats_corpus=None, fluency_tokens: int = 0,
                progress=True) -> tuple[dict, list[dict], CaseJournal]:
    """``spec``'s evaluation of ``cases`` edited ``batch_size`` at a time (the last batch may be
    smaller), through ``run_job``: ``(results, per-case records, journal)``; the results keep the
    batch size."""
    if not cases:
        raise ValueError("there are no edit cases to evaluate")
    editor = spec_editor(handle, spec, checkpoint, stats_corpus)
    job = BatchEditJob(**model_of(handle), spec=spec, checkpoint=_named(checkpoint),
                       stats_corpus=_named(stats_corpus), fluency_tokens=fluency_tokens)
    batches = [list(cases[start:start + batch_size]) for start in range(0, len(cases), batch_size)]
    settings = {**edit_settings("eval", [spec], {spec.label: editor}, job), "batch_size": batch_size}
    rows, journal = run_job(job, handle, batches, settings, options, f"eval: {spec.label}, batches of {batch_size}",
                            progress)
    records = [record for row in rows for record in row["cases"]]
    results = summarize(records, cases[0].source)
    results.update(batch_size=batch_size, layer=spec.layer or editor.method.edited_layers(
        editor.hparams, handle.bridge.cfg.n_layers))
    return results, records, journal
