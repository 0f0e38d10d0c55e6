"""``workbench eval --sequential N`` and ``workbench compare --sequential N``: methods editing the
same cases one after another (``evaluation.sequential``), with their curves, thresholds and table.

The cases of a sequence are those of ``--cases``, else every case of the model's world: its test
split first, then its train split (a sequence of 500 edits needs more cases than the test split
holds). Every method edits the same first ``N`` cases in the same order. A sequence is one
computation that carries its state from edit to edit, so it runs in this process and is not
journaled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from workbench.core.cases import EditCase, parse_cases, read_cases
from workbench.core.io import json_safe, refuse_existing, write_json, write_text_atomic
from workbench.core.plotting import figure_paths, save_figure
from workbench.evaluation.compare import MethodSpec, spec_editor
from workbench.evaluation.runner import format_metric
from workbench.evaluation.sequential import (
    SEQUENTIAL_METRICS,
    THRESHOLDS,
    editor_steps,
    recall_thresholds,
    sequential_evaluation,
    sequential_figure,
)
from workbench.model.handle import ModelHandle
from workbench.world import export_edit_cases

OUTPUT_NAMES = ("sequential.jsonl", "sequential.json", "sequential.md")


def sequence_cases(handle: ModelHandle, cases_file: str | Path | None, n: int) -> list[EditCase]:
    """The first ``n`` cases of the sequence (see the module docstring); fewer is a clear error."""
    if cases_file is not None:
        cases, where = read_cases(cases_file), str(cases_file)
    elif handle.world is not None:
        records = export_edit_cases(handle.world, "test") + export_edit_cases(handle.world, "train")
        cases = parse_cases([{**record, "case_id": index} for index, record in enumerate(records)],
                            "the world's test and train splits")
        where = "the model's world (test split, then train split)"
    else:
        raise ValueError("this model has no fact world: pass --cases FILE")
    if len(cases) < n:
        raise ValueError(f"{where} holds {len(cases)} edit cases, fewer than the {n} edits asked for")
    return cases[:n]


def run_sequences(handle: ModelHandle, cases: Sequence[EditCase], specs: Sequence[MethodSpec], every: int,
                  batch_size: int = 1, checkpoint=None, stats_corpus=None, progress=True) -> dict[str, list[dict]]:
    """``{spec label: checkpoints}``: each spec edits ``cases`` in sequence, ``batch_size`` at a time."""
    runs = {}
    for spec in specs:
        steps = editor_steps(spec_editor(handle, spec, checkpoint, stats_corpus), spec.layer)
        runs[spec.label] = sequential_evaluation(handle.bridge, cases, steps, every, batch_size, handle.world,
                                                 progress, f"{spec.label}: {len(cases)} edits in sequence")
    return runs


def sequence_summary(runs: dict[str, list[dict]], batch_size: int) -> dict:
    """Per method: the thresholds of both recalls (``recall_thresholds``), the last checkpoint, the
    mean time per edit, and ``stopped`` when an edit failed before the end (``sequential_evaluation``)."""
    summary = {}
    for label, rows in runs.items():
        last = rows[-1]
        summary[label] = {
            "edits": last["edits"], "batch_size": batch_size,
            "seconds_per_edit": last["edit_seconds"] / max(last["edits"], 1),
            "thresholds": {metric: recall_thresholds(rows, metric) for metric in ("recall_corpus", "recall_heldout")},
            "start": {metric: rows[0][metric] for metric in ("recall_corpus", "recall_heldout")},
            "last": {metric: last[metric] for metric in SEQUENTIAL_METRICS},
            **({"stopped": last["stopped"]} if "stopped" in last else {})}
    return summary


def sequence_table(summary: dict) -> str:
    """Markdown: per method, the last checkpoint's metrics and the corpus recall's thresholds."""
    fractions = [str(fraction) for fraction in THRESHOLDS]
    header = (["method", "edits", *SEQUENTIAL_METRICS] + [f"recall < {f} of start at" for f in fractions]
              + ["s / edit"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in summary.items():
        thresholds = entry["thresholds"]["recall_corpus"]
        edits = str(entry["edits"]) + (" (stopped: an edit failed)" if "stopped" in entry else "")
        cells = [label, edits, *(format_metric(entry["last"][m]) for m in SEQUENTIAL_METRICS),
                 *(str(thresholds[f]) if thresholds[f] is not None else f"> {entry['edits']}" for f in fractions),
                 f"{entry['seconds_per_edit']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sequence_files(out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    return [out_dir / name for name in OUTPUT_NAMES] + figure_paths(out_dir / "sequential.png")


def write_sequences(out_dir: str | Path, runs: dict[str, list[dict]], settings: dict, batch_size: int,
                    overwrite: bool = False) -> dict:
    """``sequential.jsonl`` (one line per method and checkpoint), ``sequential.json`` (settings and
    ``sequence_summary``), ``sequential.md`` and the curves ``sequential.{png,svg}``; existing files
    are refused unless ``overwrite``. Returns the summary."""
    out_dir = Path(out_dir)
    refuse_existing(sequence_files(out_dir), overwrite)
    summary = sequence_summary(runs, batch_size)
    lines = [json.dumps(json_safe({"method": label, **row}), allow_nan=False) for label, rows in runs.items()
             for row in rows]
    write_text_atomic(out_dir / "sequential.jsonl", "\n".join(lines) + "\n", overwrite=overwrite)
    write_json(out_dir / "sequential.json", {"settings": settings, "methods": summary}, overwrite=overwrite)
    write_text_atomic(out_dir / "sequential.md", sequence_table(summary) + "\n", overwrite=overwrite)
    n_edits = max(entry["edits"] for entry in summary.values())
    title = (f"{n_edits} edits in sequence, {batch_size} per edit; recall of the facts no edit made stale"
             if batch_size > 1 else f"{n_edits} edits in sequence; recall of the facts no edit made stale")
    save_figure(sequential_figure(runs, title), out_dir / "sequential.png", overwrite)
    return summary
