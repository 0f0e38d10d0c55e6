"""Evaluate an editing method over edit cases: measure before, edit through hooks, measure after."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from workbench.editing.edit import Edit
from workbench.evaluation.cases import EditCase
from workbench.evaluation.metrics import case_metrics, measure
from workbench.io import write_json, write_text_atomic

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


def evaluate(model, cases: Sequence[EditCase], compute: Callable[[EditCase], Edit],
             progress: bool = True) -> tuple[dict, list[dict]]:
    """``(results, per-case records)``; the model is left as it was found (edits are hooks)."""
    records = []
    for case in tqdm(cases, desc="evaluating edits", disable=not progress):
        before = measure(model, case)
        started = time.perf_counter()
        edit = compute(case)
        edit_seconds = time.perf_counter() - started
        with edit.applied(model):
            after = measure(model, case)
        records.append({"case_id": case.case_id, "prompt": case.request.prompt, "target_new": case.request.target_new,
                        "method": edit.method, "edit_seconds": edit_seconds, "metrics": case_metrics(before, after)})
    names = list(records[0]["metrics"]) if records else list(HEADLINE_METRICS)
    results = {name: aggregate([r["metrics"][name] for r in records]) for name in names}
    seconds = sorted(r["edit_seconds"] for r in records)
    results["median_edit_seconds"] = seconds[len(seconds) // 2] if seconds else None
    results["n_cases"] = len(records)
    return results, records


def write_results(out_dir: str | Path, results: dict, records: list[dict], overwrite: bool = False) -> None:
    """``results.json`` and ``cases.jsonl`` in ``out_dir`` (existing files kept unless ``overwrite``)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", results, overwrite=overwrite)
    lines = "\n".join(json.dumps(record, default=lambda v: None) for record in records) + "\n"
    write_text_atomic(out_dir / "cases.jsonl", lines, overwrite=overwrite)
