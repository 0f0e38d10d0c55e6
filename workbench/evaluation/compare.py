"""Several editing methods over the same cases: one table (Markdown, JSON) and one bar chart.

A method is named by a spec ``method[:variant][@layer]``: ``rome`` (the layer of its hyperparameter
file), ``rome@3`` (layer 3) or ``rome@auto`` (the locator's choice per case); ``ike`` takes no
layer. ``:variant`` reads ``hparams/<method>-<variant>.json`` instead of the method's default file
(``mend:reference``). A MEND editor trained with the neighbour locality loss is shown as
``<label> + neighbour locality``: the other methods never see the neighbours.
Every method sees the same cases in the same order; each case is measured once before, then edited
by each method in turn (through hooks, or in context for IKE) and measured after.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from workbench.core.cases import EditCase
from workbench.core.edit import Edit
from workbench.core.io import refuse_existing, write_json, write_text_atomic
from workbench.core.journal import CaseJournal, run_items
from workbench.core.plotting import plt, save_figure
from workbench.core.progress import Progress
from workbench.editing.editor import Editor
from workbench.editing.registry import METHODS, tuned_hparams_file
from workbench.evaluation.metrics import FLUENCY_TOKENS
from workbench.evaluation.runner import HEADLINE_METRICS, case_rows, format_metric, summarize, write_results
from workbench.model.handle import ModelHandle


@dataclass(frozen=True)
class MethodSpec:
    """``method`` at ``layer`` (None: its hyperparameter file's) with the hyperparameters of
    ``variant`` (None: the default file) or of the file ``hparams``, shown as ``label``."""

    label: str
    method: str
    layer: str | None
    variant: str | None = None
    hparams: str | None = None

    @property
    def hparams_file(self) -> Path | None:
        if self.hparams:
            return Path(self.hparams)
        return tuned_hparams_file(self.method, self.variant) if self.variant else None


def parse_method_specs(text: str) -> list[MethodSpec]:
    """``"rome,rome@3,ft-l,mend:reference"`` -> specs; unknown methods and variants and repeated
    labels are clear errors."""
    specs = []
    for label in (part.strip() for part in text.split(",")):
        named, _, layer = label.partition("@")
        method, _, variant = named.partition(":")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r} in {text!r}; choose from {sorted(METHODS)}, "
                             "optionally with @LAYER or @auto")
        if layer and not METHODS[method].takes_layer:
            raise ValueError(f"{method} edits no single layer: write {method!r}, not {label!r}")
        if layer and not (layer.isdigit() or layer == "auto"):
            raise ValueError(f"{label!r}: the layer after @ must be a layer number or 'auto'")
        if variant and not re.fullmatch(r"[A-Za-z0-9_-]+", variant):
            raise ValueError(f"{label!r}: a variant after : is a name of letters, digits, - and _ "
                             "(hparams/METHOD-VARIANT.json)")
        spec = MethodSpec(label, method, layer or None, variant or None)
        if variant and not spec.hparams_file.is_file():
            raise ValueError(f"{label!r}: no hyperparameter file {spec.hparams_file}")
        specs.append(spec)
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"--methods must name each method spec once, got {text!r}")
    return specs


def compare_methods(model, cases: Sequence[EditCase], specs: Sequence[MethodSpec],
                    editor_for: Callable[[MethodSpec], Editor], progress: Progress = True,
                    fluency_tokens: int = FLUENCY_TOKENS,
                    journal: CaseJournal | None = None) -> dict[str, tuple[dict, list[dict]]]:
    """``{label: (results, per-case records)}`` for every spec, on the same cases: each case is
    measured once without an edit, then once per method with its edit applied. ``editor_for(spec)``:
    the editor of a spec (``spec_editor`` for a model handle). ``fluency_tokens``: length of the
    generations that measure fluency (0: no fluency). ``journal``: where progress is kept as it
    goes (``journal.CaseJournal``; by default in memory only)."""
    if not cases:
        raise ValueError("there are no edit cases to compare the methods on")
    editors = {spec.label: editor_for(spec) for spec in specs}
    computes = spec_edits(specs, editors)
    rows = run_items(cases, lambda case: case_rows(model, case, computes, fluency_tokens), progress,
                     f"comparing {len(specs)} methods", journal)
    return compared_results(rows, specs, editors, model.cfg.n_layers, cases[0].source)


def spec_edits(specs: Sequence[MethodSpec], editors: dict[str, Editor]) -> dict[str, Callable[[EditCase], Edit]]:
    """``{spec label: case -> edit}``: the spec's editor (``editors[label]``) at the spec's layer."""
    return {spec.label: (lambda case, s=spec: editors[s.label].edit_case(case, s.layer)) for spec in specs}


def compared_results(rows: Sequence[dict[str, dict]], specs: Sequence[MethodSpec], editors: dict[str, Editor],
                     n_layers: int, source: str = "") -> dict[str, tuple[dict, list[dict]]]:
    """``compare_methods``' result from every case's ``{spec label: record}`` (``case_rows``), in
    case order: a MEND editor trained with the neighbour locality loss is labelled as such."""
    compared = {}
    for spec in specs:
        editor = editors[spec.label]
        label = spec.label + (" + neighbour locality" if getattr(editor.hparams, "neighbour_locality", False) else "")
        records = [row[spec.label] for row in rows]
        results = summarize(records, source)
        results["method"] = spec.method
        results["layer"] = spec.layer or editor.method.edited_layers(editor.hparams, n_layers)
        compared[label] = (results, records)
    return compared


def spec_editor(handle: ModelHandle, spec: MethodSpec, checkpoint: str | Path | None = None,
                stats_corpus: str | Path | None = None) -> Editor:
    """The editor of ``spec`` for the handle's model: the variant's hyperparameter file, else the
    tuned one; ``checkpoint`` (MEND's editor directory) only for the spec without a variant."""
    return Editor.for_model(handle, spec.method, spec.hparams_file, checkpoint if spec.variant is None else None,
                            stats_corpus)


def spec_editors(handle: ModelHandle, specs: Sequence[MethodSpec], checkpoint: str | Path | None = None,
                 stats_corpus: str | Path | None = None) -> dict[str, Editor]:
    """``{spec label: spec_editor(...)}`` for every spec."""
    return {spec.label: spec_editor(handle, spec, checkpoint, stats_corpus) for spec in specs}


def comparison_table(compared: dict[str, dict]) -> str:
    """Markdown: one row per method, mean ± 95% interval per headline metric, reverse and
    portability with their value before the edit, fluency after (before), the median edit time."""
    header = ["method", "layer", *(name.replace("_", " ") for name in HEADLINE_METRICS), "fluency", "median edit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, results in compared.items():
        cells = [label, str(results["layer"])]
        for name in HEADLINE_METRICS:
            cell = format_metric(results[name])
            if f"{name}_before" in results and results[f"{name}_before"]["mean"] is not None:
                cell += f" (before {results[f'{name}_before']['mean']:.3f}, n={results[name]['n']})"
            cells.append(cell)
        fluency, fluency_before = results["fluency"]["mean"], results["fluency_before"]["mean"]
        cells.append("n/a" if fluency is None else f"{fluency:.2f} (before {fluency_before:.2f})")
        cells.append(f"{results['median_edit_seconds']:.2f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scores_table(compared: dict[str, dict]) -> str:
    """Markdown: the benchmark's standard scores (``protocol``), in percent: the unedited model's
    (from the first method's run; every method is measured on the same cases), then one row per
    method."""
    first = next(iter(compared.values()))
    names = [name for name in first["scores"] if name != "benchmark"]
    rows = {"no edit": first["scores_before"], **{label: results["scores"] for label, results in compared.items()}}
    lines = [f"| method ({first['scores']['benchmark']}) | " + " | ".join(names) + " |",
             "|" + "---|" * (len(names) + 1)]
    for label, scores in rows.items():
        values = [scores[name] for name in names]
        lines.append(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:.1f}" for v in values) + " |")
    return "\n".join(lines)


def comparison_csv(compared: dict[str, dict]) -> str:
    """CSV: one row per method with its edited layer(s), each headline metric's mean, 95% interval
    and case count, fluency after and before, and the median edit time in seconds."""
    cells = [(name, part) for name in HEADLINE_METRICS for part in ("mean", "ci95", "n")]
    columns = ["method", "layer"] + [f"{name}_{part}" for name, part in cells]
    columns += ["fluency", "fluency_before", "median_edit_seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for label, results in compared.items():
        row = {"method": label, "layer": results["layer"], "fluency": results["fluency"]["mean"],
               "fluency_before": results["fluency_before"]["mean"],
               "median_edit_seconds": results["median_edit_seconds"]}
        row.update({f"{name}_{part}": results[name][part] for name, part in cells})
        writer.writerow(row)
    return buffer.getvalue()


def plot_comparison(compared: dict[str, dict], path: str | Path, overwrite: bool = False) -> list[Path]:
    """``comparison_figure`` saved as PNG and SVG."""
    return save_figure(comparison_figure(compared), path, overwrite)


def comparison_figure(compared: dict[str, dict]) -> Figure:
    """Grouped bars: each headline metric's mean per method, with 95% intervals."""
    figure, axis = plt.subplots(figsize=(1.4 * len(HEADLINE_METRICS) + 1, 3.4))
    width = 0.8 / len(compared)
    for index, (label, results) in enumerate(compared.items()):
        means = [results[name]["mean"] for name in HEADLINE_METRICS]
        errors = [results[name]["ci95"] or 0.0 for name in HEADLINE_METRICS]
        positions = [i + (index - (len(compared) - 1) / 2) * width for i in range(len(HEADLINE_METRICS))]
        axis.bar(positions, [0.0 if m is None else m for m in means], width, yerr=errors, capsize=2, label=label)
    axis.set_xticks(range(len(HEADLINE_METRICS)), [name.replace("_", "\n") for name in HEADLINE_METRICS])
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("mean over cases")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    n_cases = next(iter(compared.values()))["n_cases"]
    axis.set_title(f"{n_cases} edit cases; weight edits through hooks, IKE in context", fontsize=9)
    return figure


def label_directory(label: str) -> str:
    """A method's directory name: its label with every run of other characters than letters,
    digits and ``@._`` replaced by ``-`` (``mend + neighbour locality`` -> ``mend-neighbour-locality``)."""
    return re.sub(r"[^A-Za-z0-9@._]+", "-", label)


def write_comparison(out_dir: str | Path, compared: dict[str, tuple[dict, list[dict]]],
                     overwrite: bool = False) -> None:
    """``comparison.{md,json,png,svg}`` and, per method, ``<label_directory(label)>/results.json`` and
    ``cases.jsonl``; nothing is written when any of them exists, unless ``overwrite``."""
    out_dir = Path(out_dir)
    names = ["comparison.md", "comparison.json", "comparison.png", "comparison.svg"]
    names += [f"{label_directory(label)}/{name}" for label in compared for name in ("results.json", "cases.jsonl")]
    refuse_existing([out_dir / name for name in names], overwrite)
    for label, (results, records) in compared.items():
        write_results(out_dir / label_directory(label), results, records, overwrite=overwrite)
    table = {label: pair[0] for label, pair in compared.items()}
    write_text_atomic(out_dir / "comparison.md", comparison_table(table) + "\n\n" + scores_table(table) + "\n",
                      overwrite=overwrite)
    plot_comparison(table, out_dir / "comparison.png", overwrite)
    write_json(out_dir / "comparison.json", table, overwrite=overwrite)
