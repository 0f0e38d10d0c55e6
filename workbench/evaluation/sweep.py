"""Layer sweep: the same edits made at every layer and evaluated (the ROME paper's layer-sweep figure).

Each layer's row has the aggregates of ``SWEEP_METRICS`` (mean, 95% interval, count) and a
``score``: the harmonic mean of efficacy, paraphrase and neighbourhood, the three numbers an edit
at that layer must get right together (as CounterFact's S combines ES, PS and NS). The best layer
is the one with the highest score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from workbench.core.cases import EditCase
from workbench.core.journal import CaseJournal, run_items
from workbench.core.plotting import plt, save_figure
from workbench.core.progress import Progress
from workbench.editing.editor import Editor
from workbench.evaluation.runner import case_rows, format_metric, summarize
from workbench.model.tokens import require_fits_context

SWEEP_METRICS = ("efficacy", "paraphrase", "neighborhood", "same_subject")
SCORED_METRICS = ("efficacy", "paraphrase", "neighborhood")


def sweep_score(results: dict) -> float | None:
    """Harmonic mean of the means of ``SCORED_METRICS`` (None when one is missing; 0 when one is 0)."""
    means = [results[name]["mean"] for name in SCORED_METRICS]
    if any(mean is None for mean in means):
        return None
    return 0.0 if min(means) == 0 else len(means) / sum(1 / mean for mean in means)


def layer_sweep(model, cases: Sequence[EditCase], editor: Editor, layers: Sequence[int],
                progress: Progress = True, journal: CaseJournal | None = None) -> list[dict]:
    """One row per layer: every case edited at that layer by ``editor`` and evaluated through hooks.
    A layer the method refuses (a ``ValueError``, such as ROME's at a layer whose output cannot reach
    the prediction) gets a row with its ``refused`` reason and no metrics; a case with a prompt too
    long for the model's context is refused before any layer (it is not the layer's doing).
    The work is one item per (layer, case) (``sweep_items``, ``sweep_item_rows``), kept in
    ``journal`` as it goes (``core.journal``; by default in memory only)."""
    check_sweep_cases(model, cases)
    rows = run_items(sweep_items(cases, layers), lambda item: sweep_item_rows(model, editor, item), progress,
                     f"{editor.name} layer sweep", journal)
    return sweep_rows(layers, len(cases), rows, cases[0].source)


def check_sweep_cases(model, cases: Sequence[EditCase]) -> None:
    """Refuse, before any layer, no cases or a case whose prompts do not fit the model's context."""
    if not cases:
        raise ValueError("there are no edit cases to sweep the layers with")
    for case in cases:
        for prompt, answers in case.prompts_and_answers():
            require_fits_context(model, model.tokenizer, [prompt], answers)


def sweep_items(cases: Sequence[EditCase], layers: Sequence[int]) -> list[tuple[int, EditCase]]:
    """``(layer, case)`` for every layer, every case in order."""
    return [(layer, case) for layer in layers for case in cases]


def sweep_item_rows(model, editor: Editor, item: tuple[int, EditCase]) -> dict:
    """``{"edit": record}`` of the case edited at the layer (``runner.case_rows``, without fluency),
    or ``{"refused": reason}`` when the method refuses that layer."""
    layer, case = item
    try:
        return case_rows(model, case, {"edit": lambda c: editor.edit_case(c, layer)}, fluency_tokens=0)
    except ValueError as error:
        return {"refused": str(error)}


def sweep_rows(layers: Sequence[int], n_cases: int, item_rows: Sequence[dict], source: str = "") -> list[dict]:
    """The rows of ``layer_sweep`` from every item's rows (``sweep_item_rows``, in ``sweep_items``' order)."""
    rows = []
    for position, layer in enumerate(layers):
        chunk = item_rows[position * n_cases:(position + 1) * n_cases]
        refused = next((row["refused"] for row in chunk if "refused" in row), None)
        if refused is not None:
            empty = {"mean": None, "ci95": None, "n": 0}
            rows.append({"layer": layer, "n_cases": 0, "median_edit_seconds": None, "refused": refused,
                         **{name: empty for name in SWEEP_METRICS}, "score": None})
            continue
        results = summarize([row["edit"] for row in chunk], source)
        rows.append({"layer": layer, "n_cases": results["n_cases"],
                     "median_edit_seconds": results["median_edit_seconds"],
                     **{name: results[name] for name in SWEEP_METRICS}, "score": sweep_score(results)})
    return rows


def best_layer(rows: Sequence[dict]) -> int:
    """The layer whose row has the highest ``score``."""
    scored = [row for row in rows if row["score"] is not None]
    if not scored:
        raise ValueError("no layer of the sweep has efficacy, paraphrase and neighbourhood measured")
    return max(scored, key=lambda row: row["score"])["layer"]


def plot_layer_sweep(rows: Sequence[dict], path: str | Path, title: str = "",
                     overwrite: bool = False) -> list[Path]:
    """Each metric's mean per layer with its 95% interval; the best layer marked (PNG and SVG)."""
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    layers = [row["layer"] for row in rows]
    for name in SWEEP_METRICS:
        means = [row[name]["mean"] for row in rows]
        errors = [row[name]["ci95"] or 0.0 for row in rows]
        if any(mean is not None for mean in means):
            axis.errorbar(layers, [float("nan") if m is None else m for m in means], yerr=errors, marker="o",
                          capsize=3, label=name.replace("_", " "))
    axis.axvline(best_layer(rows), color="grey", linestyle=":", label="best layer")
    axis.set_xlabel("edited layer")
    axis.set_ylabel("share of prompts")
    axis.set_ylim(-0.03, 1.03)
    axis.set_xticks(layers)
    axis.legend(fontsize=7, loc="best")
    n_cases = max(row["n_cases"] for row in rows)
    axis.set_title(title or f"layer sweep, {n_cases} cases per layer", fontsize=9)
    return save_figure(figure, path, overwrite)


def sweep_table(rows: Sequence[dict], key: str = "layer", metrics: Sequence[str] = SWEEP_METRICS) -> str:
    """A Markdown table of sweep rows, one per value of ``key`` (mean ± 95% interval per metric)."""
    header = f"| {key} | " + " | ".join(name.replace("_", " ") for name in metrics) + " | score | median edit |"
    lines = [header, "|" + "---|" * (len(metrics) + 3)]
    for row in rows:
        cells = " | ".join(format_metric(row[name]) for name in metrics)
        score = "n/a" if row["score"] is None else f"{row['score']:.3f}"
        seconds = "refused" if row.get("refused") else f"{row['median_edit_seconds']:.2f} s"
        lines.append(f"| {row[key]} | {cells} | {score} | {seconds} |")
    return "\n".join(lines)
