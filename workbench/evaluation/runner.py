"""Evaluate an editing method over edit cases: measure before, edit through hooks, measure after.

An in-context edit (IKE) is measured with its context before every prompt of the case; its
``details`` (demonstrations used, and dropped to fit the model's context) go into the case's record.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from workbench.core.cases import EditCase
from workbench.core.edit import Edit
from workbench.core.io import json_safe, refuse_existing, write_json, write_text_atomic
from workbench.core.progress import Progress, reported
from workbench.evaluation.metrics import FLUENCY_TOKENS, Measurement, case_metrics, measure, protocol_metrics
from workbench.evaluation.protocol import protocol_scores

HEADLINE_METRICS = ("efficacy", "paraphrase", "reverse", "portability", "neighborhood", "same_subject")


def aggregate(values: Sequence[float]) -> dict:
    """Mean and the half-width of a normal-approximation 95% confidence interval over the cases
    that have the metric (NaN values are cases without such prompts)."""
    present = [v for v in values if not math.isnan(v)]
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


def evaluate(model, cases: Sequence[EditCase], compute: Callable[[EditCase], Edit],
             progress: Progress = True, description: str = "evaluating edits",
             fluency_tokens: int = FLUENCY_TOKENS,
             befores: Sequence[Measurement] | None = None) -> tuple[dict, list[dict]]:
    """``(results, per-case records)``; the model is left as it was found (edits are hooks).
    ``fluency_tokens``: length of the greedy generations whose entropy measures fluency (0: skip).
    ``befores``: the cases' measurements without any edit, when already made (``compare`` shares
    them between methods); else each case is measured before its edit. ``results["scores"]`` are
    the benchmark's standard scores after the edits, ``results["scores_before"]`` the same of the
    unedited model; ``results["layers_edited"]`` the layers any edit changed (each record has its
    own ``layers``; none for an in-context edit)."""
    if not cases:
        raise ValueError("there are no edit cases to evaluate")
    records, measured = [], []
    for index, case in enumerate(reported(cases, description, progress)):
        before = befores[index] if befores is not None else measure(model, case, fluency_tokens)
        measured.append(before)
        started = time.perf_counter()
        edit = compute(case)
        edit_seconds = time.perf_counter() - started
        with edit.applied(model):
            after = measure(model, case.in_context(edit.context), fluency_tokens)
        records.append({"case_id": case.case_id, "prompt": case.request.prompt, "target_new": case.request.target_new,
                        "method": edit.method, "layers": list(edit.layers), "edit_seconds": edit_seconds,
                        "metrics": case_metrics(before, after),
                        **({"details": edit.details} if edit.details else {})})
    names = list(records[0]["metrics"]) if records else list(HEADLINE_METRICS)
    results = {name: aggregate([r["metrics"][name] for r in records]) for name in names}
    seconds = sorted(r["edit_seconds"] for r in records)
    results["median_edit_seconds"] = seconds[len(seconds) // 2] if seconds else None
    results["n_cases"] = len(records)
    results["layers_edited"] = sorted({layer for r in records for layer in r["layers"]})
    source = cases[0].source if cases else ""
    results["scores"] = protocol_scores(results, source)
    results["scores_before"] = protocol_scores(unedited_results(measured), source)
    return results, records


def unedited_results(befores: Sequence[Measurement]) -> dict:
    """The aggregated ``protocol_metrics`` of the cases without any edit."""
    rows = [protocol_metrics(before) for before in befores]
    return {name: aggregate([row[name] for row in rows]) for name in (rows[0] if rows else ())}


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
