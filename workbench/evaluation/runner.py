"""Evaluate an editing method over edit cases: measure before, edit through hooks, measure after.

An in-context edit (IKE) is measured with its context before every prompt of the case; its
``details`` (demonstrations used, and dropped to fit the model's context) go into the case's record.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from workbench.core.cases import EditCase
from workbench.core.edit import Edit
from workbench.core.io import json_safe, refuse_existing, write_json, write_text_atomic
from workbench.core.journal import CaseJournal, run_items
from workbench.core.progress import Progress
from workbench.evaluation.metrics import FLUENCY_TOKENS, Measurement, case_metrics, measure, protocol_metrics
from workbench.evaluation.protocol import protocol_scores

HEADLINE_METRICS = ("efficacy", "paraphrase", "reverse", "portability", "neighborhood", "same_subject")


def aggregate(values: Sequence[float]) -> dict:
    """Mean and the half-width of a normal-approximation 95% confidence interval over the cases
    that have the metric (NaN or None values are cases without such prompts)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return {"mean": None, "ci95": None, "n": 0}
    mean = sum(present) / len(present)
    if len(present) < 2:
        return {"mean": mean, "ci95": None, "n": 1}
    variance = sum((v - mean) ** 2 for v in present) / (len(present) - 1)
    return {"mean": mean, "ci95": 1.96 * math.sqrt(variance / len(present)), "n": len(present)}


def format_metric(value: dict) -> str:
    """``mean ± ci95`` of an aggregate, or ``n/a`` when no case had the metric."""
    if value["mean"] is None:
        return "n/a"
    return f"{value['mean']:.3f}" + (f" ± {value['ci95']:.3f}" if value["ci95"] is not None else "")


def case_rows(model, case: EditCase, computes: Mapping[str, Callable[[EditCase], Edit]],
              fluency_tokens: int = FLUENCY_TOKENS) -> dict[str, dict]:
    """One case, measured once without an edit and then once with each of ``computes``' edits
    applied: ``{label: record}`` (``case_record``)."""
    before = measure(model, case, fluency_tokens)
    rows = {}
    for label, compute in computes.items():
        started = time.perf_counter()
        edit = compute(case)
        edit_seconds = time.perf_counter() - started
        with edit.applied(model):
            after = measure(model, case.in_context(edit.context), fluency_tokens)
        rows[label] = case_record(case, edit, edit_seconds, before, after)
    return rows


def batch_records(model, cases: Sequence[EditCase], compute_batch: Callable[[Sequence[EditCase]], Edit],
                  fluency_tokens: int = FLUENCY_TOKENS) -> list[dict]:
    """A batch of cases edited at once: each case measured without an edit, the batch's one edit
    computed, then each case measured with it applied. Each record (``case_record``) has the
    batch's size and an ``edit_seconds`` of the batch's time shared equally among its cases."""
    befores = [measure(model, case, fluency_tokens) for case in cases]
    started = time.perf_counter()
    edit = compute_batch(cases)
    seconds = (time.perf_counter() - started) / len(cases)
    with edit.applied(model):
        afters = [measure(model, case.in_context(edit.context), fluency_tokens) for case in cases]
    return [{**case_record(case, edit, seconds, before, after), "batch_size": len(cases)}
            for case, before, after in zip(cases, befores, afters)]


def case_record(case: EditCase, edit: Edit, edit_seconds: float, before: Measurement, after: Measurement) -> dict:
    """A case's record: its metrics, the edit's method, layers, time and details (less a batch
    edit's list of requests), and ``unedited``, the benchmark metrics of the model without the edit."""
    details = {key: value for key, value in edit.details.items() if key != "requests"}
    return {"case_id": case.case_id, "prompt": case.request.prompt, "target_new": case.request.target_new,
            "method": edit.method, "layers": list(edit.layers), "edit_seconds": edit_seconds,
            "metrics": case_metrics(before, after), "unedited": protocol_metrics(before),
            **({"details": details} if details else {})}


def summarize(records: Sequence[dict], source: str = "") -> dict:
    """The aggregates of one method's per-case ``records`` (``case_rows``): every metric's mean,
    95% interval and count, the median edit time, ``layers_edited`` (the layers any edit changed),
    ``scores`` (the benchmark's standard scores after the edits; ``source`` names the benchmark)
    and ``scores_before`` (the same of the unedited model)."""
    if not records:
        raise ValueError("there are no edit cases to evaluate")
    results = {name: aggregate([r["metrics"][name] for r in records]) for name in records[0]["metrics"]}
    seconds = sorted(r["edit_seconds"] for r in records)
    results["median_edit_seconds"] = seconds[len(seconds) // 2]
    results["n_cases"] = len(records)
    results["layers_edited"] = sorted({layer for r in records for layer in r["layers"]})
    results["scores"] = protocol_scores(results, source)
    unedited = {name: aggregate([r["unedited"][name] for r in records]) for name in records[0]["unedited"]}
    results["scores_before"] = protocol_scores(unedited, source)
    return results


def evaluate(model, cases: Sequence[EditCase], compute: Callable[[EditCase], Edit],
             progress: Progress = True, description: str = "evaluating edits",
             fluency_tokens: int = FLUENCY_TOKENS, journal: CaseJournal | None = None) -> tuple[dict, list[dict]]:
    """``(results, per-case records)`` of ``compute``'s edits of ``cases`` (``case_rows`` and
    ``summarize``); the model is left as it was found (edits are hooks). ``fluency_tokens``: length
    of the greedy generations whose entropy measures fluency (0: skip). ``journal``: where the
    run's progress is kept as it goes (``journal.CaseJournal``; by default in memory only)."""
    if not cases:
        raise ValueError("there are no edit cases to evaluate")
    rows = run_items(cases, lambda case: case_rows(model, case, {"": compute}, fluency_tokens),
                     progress, description, journal)
    records = [row[""] for row in rows]
    return summarize(records, cases[0].source), records


def result_files(out_dir: str | Path) -> list[Path]:
    """The files ``write_results`` writes into ``out_dir``."""
    return [Path(out_dir) / "results.json", Path(out_dir) / "cases.jsonl"]


def write_results(out_dir: str | Path, results: dict, records: list[dict], overwrite: bool = False) -> None:
    """``results.json`` and ``cases.jsonl`` in ``out_dir`` (existing files kept unless ``overwrite``;
    NaN, a metric a case has no prompts for, is written as null)."""
    out_dir = Path(out_dir)
    refuse_existing(result_files(out_dir), overwrite)
    write_json(out_dir / "results.json", results, overwrite=overwrite)
    lines = "\n".join(json.dumps(json_safe(record), allow_nan=False) for record in records) + "\n"
    write_text_atomic(out_dir / "cases.jsonl", lines, overwrite=overwrite)
