"""The ``workbench edit``, ``eval`` and ``compare`` commands (argument parsing is in ``cli``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from workbench.editing.bench import bench_rome
from workbench.editing.edit import EditRequest
from workbench.editing.editor import Editor
from workbench.editing.export import check_export_target, export_edited_model
from workbench.editing.report import format_before_after, predictions, probe_prompts
from workbench.evaluation.cases import EditCase, load_edit_cases, parse_cases
from workbench.evaluation.compare import compare_methods, comparison_table, parse_method_specs, write_comparison
from workbench.evaluation.runner import HEADLINE_METRICS, evaluate, format_metric, write_results
from workbench.io import refuse_existing
from workbench.model.loading import load_model_and_world, resolve_model
from workbench.world import World, export_edit_cases


def world_case(world: World | None, prompt: str, subject: str) -> EditCase | None:
    """The edit case of the model's world with this prompt and subject, if any."""
    if world is None:
        return None
    records = [c for c in export_edit_cases(world) if c["prompt"] == prompt and c["subject"] == subject]
    return parse_cases(records[:1], "the model's world")[0] if records else None


def cmd_edit(args) -> int:
    if args.export:
        check_export_target(args.export)
    model, world = load_model_and_world(args.model)
    case = world_case(world, args.prompt, args.subject)
    truth = args.ground_truth or (case.request.ground_truth if case else None)
    request = EditRequest(args.prompt, args.subject, args.target_new, truth)
    edit = Editor(model, args.method, args.hparams, world, args.stats_corpus)(request, args.layer)
    (layer,) = edit.layers
    probes = probe_prompts(request, case)
    before = predictions(model, probes, request)
    with edit.applied(model):
        after = predictions(model, probes, request)
    payload = {"request": dataclasses.asdict(request), "method": edit.method, "layer": layer,
               "edit_seconds": edit.timings["total_s"], "before": before, "after": after}
    if args.export:
        payload["exported_to"] = str(export_edited_model(resolve_model(args.model), [edit], args.export))
    if args.json:
        print(json.dumps(payload, indent=1))
        return 0
    print(f"{edit.method.upper()} at layer {layer} ({edit.timings['total_s']:.1f} s): "
          f"{request.prompt!r} -> {request.target_new!r} (was {truth!r})")
    print(format_before_after(before, after))
    if args.export:
        print(f"\nedited model written to {payload['exported_to']} (the base model is unchanged)")
    return 0


def cmd_eval(args) -> int:
    model, world = load_model_and_world(args.model)
    cases = load_edit_cases(args.cases, world)
    editor = Editor(model, args.method, args.hparams, world, args.stats_corpus)
    results, records = evaluate(model, cases[: args.n], lambda case: editor(case.request, args.layer))
    results["method"] = args.method
    write_results(args.out, results, records, overwrite=args.force)
    print(f"{args.method} on {results['n_cases']} cases (median edit {results['median_edit_seconds']:.2f} s) "
          f"-> {args.out}")
    for name in HEADLINE_METRICS:
        if results[name]["mean"] is not None:
            print(f"  {name:>14}: {format_metric(results[name])} (n={results[name]['n']})")
    return 0


def cmd_compare(args) -> int:
    specs = parse_method_specs(args.methods)
    refuse_existing([Path(args.out) / "comparison.json"], args.force)  # before any work, not only after it
    model, world = load_model_and_world(args.model)
    cases = load_edit_cases(args.cases, world)[: args.n]
    compared = compare_methods(model, cases, specs, world, args.stats_corpus)
    write_comparison(args.out, compared, overwrite=args.force)
    print(comparison_table({label: pair[0] for label, pair in compared.items()}))
    print(f"\n{len(cases)} cases -> {args.out}/comparison.{{md,json,png}}")
    return 0


def cmd_bench_rome(args) -> int:
    model, world = load_model_and_world(args.model)
    cases = load_edit_cases(args.cases, world)[: args.n]
    result = bench_rome(model, cases, Editor(model, "rome", args.hparams, world, args.stats_corpus))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"ROME at layer {result['layer']}: key statistics over {result['key_stats_tokens']} tokens "
          f"{result['key_statistics_s']:.2f} s (once per layer, then cached); median edit "
          f"{result['median_edit_s']:.2f} s and median evaluation {result['median_eval_s']:.2f} s "
          f"over {result['n_edits']} edits")
    return 0
