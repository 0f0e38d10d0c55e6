"""Is a model a good specimen of factual recall? Recall, the averaged trace and a ROME layer sweep.

    python analyses/specimen_sweep.py --variants analyses/variants/specimen.json --out runs/specimen [--device cuda]
    python analyses/specimen_sweep.py --models default --out runs/specimen     # measure existing models only
    python analyses/specimen_sweep.py --tabulate runs/*/*.specimen.json --out docs/specimen   # table and figures only

Each variant (recipe overrides of the base preset, as in ``recipe_sweep.py``) is trained into
``<out>/<name>/``; then every model is measured with the workbench's own instruments:

- recall on corpus and held-out phrasings (from its training report, else measured);
- the averaged causal trace over ``--facts`` known facts of the test split, single-layer
  restorations (window 1): MLP and residual indirect effect per layer at the subject's last
  token and at the last token, and the residual stream restored at every subject token at once
  (where the subject's assembled identity lives);
- the same trace for prompts that put the subject first ("X was born in") and for prompts that
  put the relation first ("The birthplace of X is"), separately (``effects_by_ordering``): where
  a lookup at the subject's last token is expected when it is the earliest position holding both;
- attention knockout (``tracing.knockout``) over the same facts: the relative change of the
  answer's probability per layer with the last token's attention to the subject's last token,
  or to all its tokens, blocked;
- linear probes at the name's last token (``tracing.probe``): per base relation and layer, the
  accuracy of decoding the object for held-out subjects, and chance;
- a ROME layer sweep (the tuned ROME hyperparameters at every layer) on ``--edits`` test cases:
  efficacy, paraphrase, neighbourhood, same-subject retention and their score per layer;
- IKE on ``--ike-cases`` test cases (subjects no update document names), with the tuned
  hyperparameters (k = 8 demonstrations) and with the new fact alone (k = 0): efficacy,
  paraphrase, neighbourhood and same-subject retention, and the neighbourhood prompts kept per
  kind of neighbour (another subject with the same object, with another object, a person sharing
  a name part): whether the in-context copy depends on who is asked.

    python analyses/specimen_sweep.py --models default <dir> --ike-only --out runs/ike   # recall and IKE only

Writes ``<out>/<name>.specimen.json`` per model, ``<out>/<name>.profile.png`` (and ``.svg``): its
per-layer effects and ROME scores, and ``<out>/specimen.md``, a table of them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from recipe_sweep import run_variant
from tqdm.auto import tqdm

from workbench.core.cases import parse_cases
from workbench.core.io import refuse_existing, write_json, write_text_atomic
from workbench.core.plotting import plt, save_figure
from workbench.editing.editor import Editor
from workbench.editing.registry import method_hparams
from workbench.evaluation.runner import aggregate, evaluate, format_metric
from workbench.evaluation.sweep import best_layer, layer_sweep
from workbench.model.handle import open_model
from workbench.model.loading import resolve_model
from workbench.model.recall import fact_recall
from workbench.model.tokens import encode_target, score_targets
from workbench.tracing.average import average_traces, known_facts
from workbench.tracing.cases import facts_from_cases
from workbench.tracing.groups import LAST_SUBJECT, TOKEN_GROUPS
from workbench.tracing.knockout import BLOCKED, average_knockout
from workbench.tracing.probe import attribute_probes, mean_accuracy_by_layer
from workbench.tracing.trace import TraceConfig, trace_fact, whole_subject_restorations
from workbench.world import relation
from workbench.world.cases import export_edit_cases

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


def per_layer_effects(traces: list) -> dict[str, list[float | None]]:
    """Mean MLP and residual indirect effect per layer at the subject's last token and at the last
    token over ``traces`` (window-1 traces of kinds resid and mlp)."""
    effects, _ = average_traces(traces)
    groups = (("last_subject", LAST_SUBJECT), ("last_token", LAST_TOKEN))
    return {f"{kind}_{where}": [None if np.isnan(x) else round(float(x), 4) for x in effects[kind][group]]
            for kind in ("mlp", "resid") for where, group in groups}


IKE_VARIANTS = {"k8": {}, "k0": {"k": 0}}
IKE_METRICS = ("efficacy", "paraphrase", "neighborhood", "same_subject")


NEIGHBOUR_KINDS = ("same_object", "same_relation", "shared_name_part")


def neighbours_kept_by_kind(model, edits: dict, records: list[dict]) -> dict[str, dict]:
    """Per kind of neighbourhood prompt (the case records' ``kind``: another subject with the edited
    fact's true object, one with another object, a person sharing a name part with the subject), the
    share of prompts whose own answer stays more probable than target_new with the edit's context
    before them, compared per token as the neighbourhood score compares them (aggregated over
    prompts, not cases). Equal shares mean that an in-context edit's copy does not depend on who is
    asked; a lower share for name sharers, that it looks at name parts only. ``edits``: case id ->
    the edit of that case."""
    tokenizer = model.tokenizer
    kept: dict[str, list[float]] = {kind: [] for kind in NEIGHBOUR_KINDS}
    for record in records:
        probes, edit = record["neighborhood_prompts"], edits.get(record["case_id"])
        if not probes or edit is None:
            continue
        new = edit.request.target_new
        scores = score_targets(model, tokenizer, [edit.prompt_for(p["prompt"]) for p in probes] * 2,
                               [p["answer"] for p in probes] + [new] * len(probes))
        new_tokens = len(encode_target(tokenizer, new))
        for i, probe in enumerate(probes):
            own = scores.log_prob[i].item() / len(encode_target(tokenizer, probe["answer"]))
            kept[probe["kind"]].append(float(own > scores.log_prob[len(probes) + i].item() / new_tokens))
    return {kind: aggregate(values) for kind, values in kept.items()}


def ike_results(handle, records: list[dict], n_cases: int) -> dict[str, dict]:
    """IKE's metrics (mean, ci95, n) on the first ``n_cases`` test cases (``records``: the world's
    exported test cases), and its neighbourhood prompts kept per kind, per ``IKE_VARIANTS`` entry."""
    records = records[:n_cases]
    cases = parse_cases(records, "the world's test split")
    results = {}
    for label, overrides in IKE_VARIANTS.items():
        editor = Editor.for_model(handle, "ike", dataclasses.replace(method_hparams("ike"), **overrides))
        edits = {}

        def edit_case(case, editor=editor, edits=edits):
            edits[case.case_id] = editor.edit_case(case)
            return edits[case.case_id]

        measured, _ = evaluate(handle.bridge, cases, edit_case, progress=False, fluency_tokens=0)
        results[label] = {**{name: measured[name] for name in IKE_METRICS},
                          "neighbours_kept_by_kind": neighbours_kept_by_kind(handle.bridge, edits, records)}
    return results


ORDERINGS = ("subject first", "relation first")


def ordering_facts(world, ordering: str) -> list[dict]:
    """Every base fact of the test split, asked in the first corpus phrasing of its relation that
    starts with the subject (``"subject first"``) or has words before it (``"relation first"``)."""
    facts = []
    for fact in world.facts:
        rel = relation(fact.relation)
        if not rel.is_base or world.split_of(fact.subject) != "test":
            continue
        templates = [p for p in rel.corpus if p.startswith("{}") == (ordering == "subject first")]
        if templates:
            facts.append({"prompt": templates[0].format(fact.subject), "subject": fact.subject,
                          "answer": fact.object})
    return facts


def effects_by_ordering(model, world, n_facts: int) -> dict[str, dict]:
    """Per ordering (``ORDERINGS``), the per-layer effects of ``n_facts`` known facts asked that way."""
    config, generator = TraceConfig(window=1, kinds=("resid", "mlp")), torch.Generator().manual_seed(0)
    results = {}
    for ordering in ORDERINGS:
        chosen = known_facts(model, ordering_facts(world, ordering))[:n_facts]
        traces = [trace_fact(model, f["prompt"], f["subject"], f["answer"], config, generator)
                  for f in tqdm(chosen, desc=f"tracing, {ordering}")]
        results[ordering] = {"n_facts": len(traces), **per_layer_effects(traces)}
    return results


def _open_on(reference: str, device: str):
    """``(model directory, handle)`` of a preset or directory, its model moved to ``device``."""
    model_dir = Path(resolve_model(reference))
    handle = open_model(model_dir)
    if device != "cpu":
        handle.bridge.to(device)
    return model_dir, handle


def measure_specimen(reference: str, n_facts: int, n_edits: int, n_ike: int, device: str = "cpu") -> dict:
    """Recall, per-layer indirect effects and the ROME layer sweep of one model (see the docstring).

    The traced facts are also averaged by subject kind (people, whose names are several words,
    and every other subject), since a subject's tokenisation decides what its last token can hold.
    """
    model_dir, handle = _open_on(reference, device)
    model, world = handle.bridge, handle.world
    records = export_edit_cases(world, "test")
    cases = parse_cases(records, "the world's test split")
    facts = facts_from_cases(cases)
    chosen = known_facts(model, facts)[:n_facts]
    config, generator = TraceConfig(window=1, kinds=("resid", "mlp")), torch.Generator().manual_seed(0)
    traces = [trace_fact(model, f["prompt"], f["subject"], f["answer"], config, generator)
              for f in tqdm(chosen, desc="tracing facts")]
    effects = per_layer_effects(traces)
    effects["resid_whole_subject"] = whole_subject_effects(model, facts, n_facts)
    is_person = [world.entity(f["subject"]).kind == "person" for f in chosen]
    by_kind = {}
    for kind, wanted in (("person", True), ("other", False)):
        subset = [t for t, person in zip(traces, is_person) if person == wanted]
        if subset:
            by_kind[kind] = {"n_facts": len(subset), "mean_subject_tokens": float(np.mean(
                [t.subject_span[1] - t.subject_span[0] for t in subset])), **per_layer_effects(subset)}
    sweep = layer_sweep(model, cases[:n_edits], Editor.for_model(handle, "rome"), range(model.cfg.n_layers))
    knockout = {blocked: [round(float(x), 4) for x in average_knockout(model, chosen, blocked=blocked)]
                for blocked in BLOCKED}
    return {"model": str(model_dir), "recall": _recall(model_dir, model, world), "n_facts_traced": len(traces),
            "indirect_effects_by_ordering": effects_by_ordering(model, world, n_facts),
            "attention_knockout": knockout, "probes": attribute_probes(model, world),
            "ike": ike_results(handle, records, n_ike),
            "mean_clean_prob": float(np.mean([t.clean_prob for t in traces])),
            "mean_corrupted_prob": float(np.mean([t.corrupted_prob for t in traces])),
            "indirect_effects": effects, "indirect_effects_by_subject_kind": by_kind,
            "rome_sweep": sweep, "rome_best_layer": best_layer(sweep)}


def measure_ike(reference: str, n_ike: int, device: str = "cpu") -> dict:
    """Recall and the IKE results of ``measure_specimen`` alone (``--ike-only``)."""
    model_dir, handle = _open_on(reference, device)
    return {"model": str(model_dir), "recall": _recall(model_dir, handle.bridge, handle.world),
            "ike": ike_results(handle, export_edit_cases(handle.world, "test"), n_ike)}


def ike_table(measured: dict[str, dict]) -> str:
    """One row per model and IKE variant: recall, IKE's four metrics and the neighbours kept per kind."""
    lines = ["| model | recall corpus | IKE | " + " | ".join(IKE_METRICS) + " | neighbours kept: "
             + " / ".join(NEIGHBOUR_KINDS) + " |", "|" + "---|" * (4 + len(IKE_METRICS))]
    for name, result in measured.items():
        for label in IKE_VARIANTS:
            ike = result["ike"][label]
            kinds = " / ".join(_share(ike["neighbours_kept_by_kind"][kind]) for kind in NEIGHBOUR_KINDS)
            lines.append(f"| {name} | {result['recall']['corpus']:.3f} | {label} | "
                         + " | ".join(format_metric(ike[m]) for m in IKE_METRICS) + f" | {kinds} |")
    return "\n".join(lines) + "\n"


def _share(value: dict) -> str:
    return "n/a" if value["mean"] is None else f"{value['mean']:.2f} (n={value['n']})"


def _peak(values: list[float | None]) -> str:
    present = [(v, layer) for layer, v in enumerate(values) if v is not None]
    value, layer = max(present)
    return f"{value:.3f} (L{layer})"


def _instruments(specimen: dict) -> str:
    """The table's cells of the later instruments (``n/a`` for a model measured before them)."""
    if "ike" not in specimen:
        return " n/a | n/a | n/a | n/a | n/a |"
    relation_first = _peak(specimen["indirect_effects_by_ordering"]["relation first"]["mlp_last_subject"])
    knockout = specimen["attention_knockout"]["last_subject"]
    layer = min(range(len(knockout)), key=knockout.__getitem__)
    means = mean_accuracy_by_layer(specimen["probes"])
    best = max(range(len(means)), key=means.__getitem__)
    probe = means[best]
    chance = sum(p["chance"] for p in specimen["probes"].values()) / len(specimen["probes"])
    ike = " | ".join("/".join(f"{specimen['ike'][label][m]['mean']:.2f}" for m in IKE_METRICS)
                     for label in IKE_VARIANTS)
    return (f" {relation_first} | {knockout[layer]:+.3f} (L{layer}) | {probe:.3f} (L{best}; chance {chance:.3f}) "
            f"| {ike} |")


def table(specimens: dict[str, dict]) -> str:
    """One row per model: recall, peak MLP effects, ROME efficacy/paraphrase/neighbourhood at the
    best layer of its sweep, the strongest attention knockout at the subject's last token, the
    probes' mean accuracy at their best layer, and IKE's four metrics per variant."""
    lines = ["| model | recall corpus | recall held-out | peak MLP effect, last subject token | peak MLP effect, "
             "last token | peak residual effect, whole subject | ROME best layer | efficacy | paraphrase | "
             "neighbourhood | same subject | peak MLP effect, last subject token, relation-first prompts | "
             "knockout of the last subject token | probe accuracy | "
             "IKE k=8: efficacy/paraphrase/neighbourhood/same subject | IKE k=0 (the same) |",
             "|" + "---|" * 16]
    for name, s in specimens.items():
        best = next(row for row in s["rome_sweep"] if row["layer"] == s["rome_best_layer"])
        metrics = " | ".join(f"{best[m]['mean']:.3f}" for m in ("efficacy", "paraphrase", "neighborhood",
                                                                 "same_subject"))
        lines.append(f"| {name} | {s['recall']['corpus']:.3f} | {s['recall']['heldout']:.3f} | "
                     f"{_peak(s['indirect_effects']['mlp_last_subject'])} | "
                     f"{_peak(s['indirect_effects']['mlp_last_token'])} | "
                     f"{_peak(s['indirect_effects']['resid_whole_subject'])} | {s['rome_best_layer']} | {metrics} |"
                     + _instruments(s))
    return "\n".join(lines) + "\n"


PROFILE_LINES = {
    "subject side": (("mlp_last_subject", "MLP, last subject token"),
                     ("resid_last_subject", "residual, last subject token"),
                     ("resid_whole_subject", "residual, every subject token")),
    "last token": (("mlp_last_token", "MLP"), ("resid_last_token", "residual")),
}


def plot_profile(name: str, specimen: dict, path: Path, overwrite: bool = False) -> list[Path]:
    """Three panels: indirect effects per layer on the subject side and at the last token, and the
    ROME sweep's efficacy, paraphrase, neighbourhood and score per layer."""
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharex=True)
    for axis, (title, lines) in zip(axes, PROFILE_LINES.items()):
        for key, label in lines:
            values = [np.nan if v is None else v for v in specimen["indirect_effects"][key]]
            axis.plot(range(len(values)), values, marker="o", label=label)
        axis.set(title=f"{title}: indirect effect", xlabel="layer", ylim=(0, 1))
        axis.legend(fontsize=7)
    sweep = [row for row in specimen["rome_sweep"] if row["score"] is not None]
    for metric in ("efficacy", "paraphrase", "neighborhood", "score"):
        values = [row[metric] if metric == "score" else row[metric]["mean"] for row in sweep]
        axes[2].plot([row["layer"] for row in sweep], values, marker="o", label=metric)
    axes[2].set(title="ROME at each layer", xlabel="layer", ylim=(0, 1.02))
    axes[2].legend(fontsize=7)
    figure.suptitle(name, y=1.04)
    return save_figure(figure, path, overwrite=overwrite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", help="JSON: variant name -> recipe overrides of --base")
    parser.add_argument("--models", nargs="*", default=[], help="existing models to measure (presets or directories)")
    parser.add_argument("--base", default="default")
    parser.add_argument("--out", required=True)
    parser.add_argument("--facts", type=int, default=40, help="known facts in the averaged trace")
    parser.add_argument("--edits", type=int, default=20, help="ROME edits per layer in the sweep")
    parser.add_argument("--ike-cases", type=int, default=200, help="test cases IKE is evaluated on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tabulate", nargs="*", default=[], help="measured *.specimen.json files: only write "
                        "the table and figures of them")
    parser.add_argument("--force", action="store_true", help="replace result files of an earlier run")
    parser.add_argument("--ike-only", action="store_true", help="measure recall and IKE only, into "
                        "<out>/<name>.ike.json and <out>/ike.md")
    args = parser.parse_args()
    out = Path(args.out)
    if args.ike_only:
        references = {Path(m).name: m for m in args.models}
        refuse_existing([out / "ike.md", *(out / f"{name}.ike.json" for name in references)], args.force)
        measured = {}
        for name, reference in references.items():
            measured[name] = measure_ike(reference, args.ike_cases, args.device)
            write_json(out / f"{name}.ike.json", measured[name], overwrite=args.force)
        write_text_atomic(out / "ike.md", ike_table(measured), overwrite=args.force)
        print(ike_table(measured))
        return
    if args.tabulate:
        specimens = {Path(f).name.removesuffix(".specimen.json"): json.loads(Path(f).read_text())
                     for f in args.tabulate}
        write_outputs(out, specimens, args.force)
        return
    references = {Path(m).name: m for m in args.models}
    refuse_existing([out / "specimen.md", *(out / f"{name}.specimen.json" for name in references)], args.force)
    if args.variants:
        for name, overrides in json.loads(Path(args.variants).read_text()).items():
            threads = torch.get_num_threads()
            run_variant((args.base, name, overrides, str(out), args.device, threads))
            references[name] = str(out / name)
    specimens = {}
    for name, reference in references.items():
        specimens[name] = measure_specimen(reference, args.facts, args.edits, args.ike_cases, args.device)
        write_json(out / f"{name}.specimen.json", specimens[name], overwrite=args.force)
    write_outputs(out, specimens, args.force)


def write_outputs(out: Path, specimens: dict[str, dict], overwrite: bool) -> None:
    """``specimen.md`` (the table) and one profile figure per model."""
    for name, specimen in specimens.items():
        plot_profile(name, specimen, out / f"{name}.profile.png", overwrite=overwrite)
    write_text_atomic(out / "specimen.md", table(specimens), overwrite=overwrite)
    print(table(specimens))


if __name__ == "__main__":
    main()
