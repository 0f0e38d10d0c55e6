"""Is a model a good specimen of factual recall? Recall, the averaged trace and a ROME layer sweep.

    python analyses/specimen_sweep.py --variants analyses/variants/specimen.json --out runs/specimen [--device cuda]
    python analyses/specimen_sweep.py --models default --out runs/specimen     # measure existing models only

Each variant (recipe overrides of the base preset, as in ``recipe_sweep.py``) is trained into
``<out>/<name>/``; then every model is measured with the workbench's own instruments:

- recall on corpus and held-out phrasings (from its training report, else measured);
- the averaged causal trace over ``--facts`` known facts of the test split, single-layer
  restorations (window 1): MLP and residual indirect effect per layer at the subject's last
  token and at the last token, and the residual stream restored at every subject token at once
  (where the subject's assembled identity lives);
- a ROME layer sweep (``hparams/rome-default.json`` at every layer) on ``--edits`` test cases:
  efficacy, paraphrase, neighbourhood, same-subject retention and their score per layer.

Writes ``<out>/<name>.specimen.json`` per model and ``<out>/specimen.md``, a table of them all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from recipe_sweep import run_variant

from workbench.editing.editor import Editor
from workbench.evaluation.cases import load_edit_cases
from workbench.evaluation.sweep import best_layer, layer_sweep
from workbench.io import refuse_existing, write_json, write_text_atomic
from workbench.model.loading import load_model_and_world, resolve_model
from workbench.model.recall import fact_recall
from workbench.tracing.average import average_trace, known_facts
from workbench.tracing.cases import facts_from_cases
from workbench.tracing.groups import LAST_SUBJECT, TOKEN_GROUPS
from workbench.tracing.trace import TraceConfig, whole_subject_restorations

LAST_TOKEN = TOKEN_GROUPS.index("last token")


def _recall(model_dir: Path, model, world) -> dict:
    report_path = model_dir / "training_report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        return {which: report[f"recall_{which}"]["recall"] for which in ("corpus", "heldout")}
    return {which: fact_recall(model, model.tokenizer, world, which)["recall"] for which in ("corpus", "heldout")}


def whole_subject_effects(model, facts: list[dict], n_facts: int) -> list[float]:
    """Mean indirect effect per layer of restoring the residual stream at every subject token at
    once, over the first ``n_facts`` known facts (the same facts ``average_trace`` picks)."""
    generator = torch.Generator().manual_seed(0)
    effects = []
    for fact in known_facts(model, facts)[:n_facts]:
        _, corrupted, restored = whole_subject_restorations(model, fact["prompt"], fact["subject"], fact["answer"],
                                                            TraceConfig(), generator)
        effects.append(restored - corrupted)
    return [round(float(x), 4) for x in np.mean(effects, axis=0)]


def measure_specimen(reference: str, n_facts: int, n_edits: int, device: str = "cpu") -> dict:
    """Recall, per-layer indirect effects and the ROME layer sweep of one model (see the docstring)."""
    model_dir = Path(resolve_model(reference))
    model, world = load_model_and_world(model_dir)
    if device != "cpu":
        model = model.to(device)
    cases = load_edit_cases(None, world)
    average = average_trace(model, facts_from_cases(cases), n_facts, TraceConfig(window=1, kinds=("resid", "mlp")),
                            torch.Generator().manual_seed(0))

    def per_layer(kind: str, group: int) -> list[float | None]:
        return [None if np.isnan(x) else round(float(x), 4) for x in average.effects[kind][group]]

    effects = {f"{kind}_{where}": per_layer(kind, group) for kind in ("mlp", "resid")
               for where, group in (("last_subject", LAST_SUBJECT), ("last_token", LAST_TOKEN))}
    effects["resid_whole_subject"] = whole_subject_effects(model, facts_from_cases(cases), n_facts)
    sweep = layer_sweep(model, cases[:n_edits], Editor(model, "rome", world=world), range(model.cfg.n_layers))
    return {"model": str(model_dir), "recall": _recall(model_dir, model, world), "n_facts_traced": average.n_facts,
            "mean_clean_prob": average.mean_clean_prob, "mean_corrupted_prob": average.mean_corrupted_prob,
            "indirect_effects": effects, "rome_sweep": sweep, "rome_best_layer": best_layer(sweep)}


def _peak(values: list[float | None]) -> str:
    present = [(v, layer) for layer, v in enumerate(values) if v is not None]
    value, layer = max(present)
    return f"{value:.3f} (L{layer})"


def table(specimens: dict[str, dict]) -> str:
    """One row per model: recall, peak MLP effects, and ROME efficacy/paraphrase/neighbourhood at
    the best layer of its sweep."""
    lines = ["| model | recall corpus | recall held-out | peak MLP effect, last subject token | peak MLP effect, "
             "last token | peak residual effect, whole subject | ROME best layer | efficacy | paraphrase | "
             "neighbourhood | same subject |",
             "|" + "---|" * 11]
    for name, s in specimens.items():
        best = next(row for row in s["rome_sweep"] if row["layer"] == s["rome_best_layer"])
        metrics = " | ".join(f"{best[m]['mean']:.3f}" for m in ("efficacy", "paraphrase", "neighborhood",
                                                                 "same_subject"))
        lines.append(f"| {name} | {s['recall']['corpus']:.3f} | {s['recall']['heldout']:.3f} | "
                     f"{_peak(s['indirect_effects']['mlp_last_subject'])} | "
                     f"{_peak(s['indirect_effects']['mlp_last_token'])} | "
                     f"{_peak(s['indirect_effects']['resid_whole_subject'])} | {s['rome_best_layer']} | {metrics} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", help="JSON: variant name -> recipe overrides of --base")
    parser.add_argument("--models", nargs="*", default=[], help="existing models to measure (presets or directories)")
    parser.add_argument("--base", default="default")
    parser.add_argument("--out", required=True)
    parser.add_argument("--facts", type=int, default=40, help="known facts in the averaged trace")
    parser.add_argument("--edits", type=int, default=20, help="ROME edits per layer in the sweep")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--force", action="store_true", help="replace result files of an earlier run")
    args = parser.parse_args()
    out = Path(args.out)
    references = {Path(m).name: m for m in args.models}
    refuse_existing([out / "specimen.md", *(out / f"{name}.specimen.json" for name in references)], args.force)
    if args.variants:
        for name, overrides in json.loads(Path(args.variants).read_text()).items():
            threads = torch.get_num_threads()
            run_variant((args.base, name, overrides, str(out), args.device, threads))
            references[name] = str(out / name)
    specimens = {}
    for name, reference in references.items():
        specimens[name] = measure_specimen(reference, args.facts, args.edits, args.device)
        write_json(out / f"{name}.specimen.json", specimens[name], overwrite=args.force)
    write_text_atomic(out / "specimen.md", table(specimens), overwrite=args.force)
    print(table(specimens))


if __name__ == "__main__":
    main()
