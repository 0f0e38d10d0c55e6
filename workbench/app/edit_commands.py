"""The ``workbench edit``, ``eval`` and ``compare`` commands (argument parsing is in ``cli``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from workbench.app.edit_bench import bench_mend, bench_rome
from workbench.app.options import open_model_of, run_options
from workbench.app.output import print_result
from workbench.app.report import format_before_after, predictions, probe_prompts
from workbench.app.runs import model_of, run_batches, run_specs
from workbench.app.sequential_runs import run_sequences, sequence_cases, sequence_files, sequence_table, write_sequences
from workbench.core.cases import EditCase, parse_cases
from workbench.core.edit import EditRequest
from workbench.core.io import refuse_existing
from workbench.editing.editor import Editor
from workbench.editing.export import check_export_target, export_edited_model
from workbench.editing.mend import default_checkpoint_dir, found_checkpoint_dir, save_mend
from workbench.editing.mend_training import train_mend
from workbench.editing.registry import method_hparams, method_named
from workbench.evaluation.compare import (
    MethodSpec,
    comparison_table,
    parse_method_specs,
    scores_table,
    spec_editor,
    write_comparison,
)
from workbench.evaluation.metrics import FLUENCY_TOKENS
from workbench.evaluation.protocol import format_scores
from workbench.evaluation.runner import HEADLINE_METRICS, format_metric, result_files, write_results
from workbench.evaluation.sequential import default_every
from workbench.model.handle import ModelHandle
from workbench.model.sources import NO_TRAINING_FACTS
from workbench.world import World, export_edit_cases
from workbench.world.cases import load_edit_cases


def editor_of(args, handle: ModelHandle, method: str | None = None, hparams=None) -> Editor:
    """An editor of the handle's model with the command's method (or ``method``), hyperparameters,
    ``--stats-corpus`` and ``--checkpoint``."""
    return Editor.for_model(handle, method or args.method, hparams if method else args.hparams,
                            getattr(args, "checkpoint", None), getattr(args, "stats_corpus", None))


def world_case(world: World | None, prompt: str, subject: str) -> EditCase | None:
    """The edit case of the model's world with this prompt and subject, if any."""
    if world is None:
        return None
    records = [c for c in export_edit_cases(world) if c["prompt"] == prompt and c["subject"] == subject]
    return parse_cases(records[:1], "the model's world")[0] if records else None


def cmd_edit(args) -> int:
    if args.export:
        check_export_target(args.export)
    handle = open_model_of(args)
    model = handle.bridge
    case = world_case(handle.world, args.prompt, args.subject)
    truth = args.ground_truth or (case.request.ground_truth if case else None)
    request = EditRequest(args.prompt, args.subject, args.target_new, truth)
    layer = args.layer or ("auto" if method_named(args.method).takes_layer else None)
    edit = editor_of(args, handle)(request, layer)
    probes = probe_prompts(request, case)
    before = predictions(model, probes, request)
    with edit.applied(model):
        after = predictions(model, probes, request, context=edit.context)
    payload = {"request": dataclasses.asdict(request), "method": edit.method, "layers": list(edit.layers),
               "edit_seconds": edit.timings["total_s"], "details": edit.details, "before": before, "after": after}
    if args.export:
        payload["exported_to"] = str(export_edited_model(handle.source.location, [edit], args.export))
    if args.json:
        print(json.dumps(payload, indent=1))
        return 0
    where = f"at layer {', '.join(map(str, edit.layers))}" if edit.layers else "in context"
    print(f"{edit.method.upper()} {where} ({edit.timings['total_s']:.1f} s): "
          f"{request.prompt!r} -> {request.target_new!r} (was {truth!r})")
    if edit.details:
        print(f"details: {json.dumps(edit.details)}")
    print(format_before_after(before, after))
    if args.export:
        print(f"\nedited model written to {payload['exported_to']} (the base model is unchanged)")
    return 0


def cmd_eval(args) -> int:
    if args.sequential:
        return run_sequence_command(args, [MethodSpec(args.method, args.method, args.layer, hparams=args.hparams)])
    refuse_existing(result_files(args.out), args.force)  # before any work, not only after it
    handle = open_model_of(args)
    cases = load_edit_cases(args.cases, handle.world)[: args.n]
    spec = MethodSpec(args.method, args.method, args.layer, hparams=args.hparams)
    if args.batch_size > 1:
        results, records, journal = run_batches(handle, cases, spec, args.batch_size, run_options(args),
                                                args.checkpoint, args.stats_corpus, FLUENCY_TOKENS)
    else:
        compared, journal = run_specs("eval", handle, cases, [spec], run_options(args), args.checkpoint,
                                      args.stats_corpus, FLUENCY_TOKENS)
        [(results, records)] = compared.values()
    results["method"], results["batch_size"] = args.method, args.batch_size
    write_results(args.out, results, records, overwrite=args.force)
    journal.close()
    batches = f", {args.batch_size} at a time" if args.batch_size > 1 else ""
    print(f"{args.method} on {results['n_cases']} cases{batches} (median edit {results['median_edit_seconds']:.2f} s "
          f"per case) -> {args.out}")
    for name in HEADLINE_METRICS:
        if results[name]["mean"] is not None:
            print(f"  {name:>14}: {format_metric(results[name])} (n={results[name]['n']})")
    print(f"  after the edits: {format_scores(results['scores'])}")
    print(f"  no edit:         {format_scores(results['scores_before'])}")
    return 0


def cmd_compare(args) -> int:
    specs = parse_method_specs(args.methods)
    if args.sequential:
        return run_sequence_command(args, specs)
    if args.batch_size > 1:
        raise ValueError("compare --batch-size goes with --sequential; for one method in batches use "
                         "workbench eval --batch-size")
    refuse_existing([Path(args.out) / "comparison.json"], args.force)  # before any work, not only after it
    handle = open_model_of(args)
    cases = load_edit_cases(args.cases, handle.world)[: args.n]
    compared, journal = run_specs("compare", handle, cases, specs, run_options(args), args.checkpoint,
                                  args.stats_corpus, args.fluency_tokens)
    write_comparison(args.out, compared, overwrite=args.force)
    journal.close()
    table = {label: pair[0] for label, pair in compared.items()}
    print(comparison_table(table) + "\n\n" + scores_table(table))
    print(f"\n{len(cases)} cases -> {args.out}/comparison.{{md,json,png}}")
    return 0


def run_sequence_command(args, specs: list[MethodSpec]) -> int:
    """``--sequential N``: every spec edits the same N cases one after another (``app.sequential_runs``)."""
    refuse_existing(sequence_files(args.out), args.force)  # before any work, not only after it
    if args.workers > 1 or args.ray_address or args.resume:
        raise ValueError("a sequence of edits runs in one process and is not journaled: drop --workers, "
                         "--ray-address and --resume")
    every = args.every or default_every(args.sequential, args.batch_size)
    handle = open_model_of(args)
    cases = sequence_cases(handle, args.cases, args.sequential)
    runs = run_sequences(handle, cases, specs, every, args.batch_size, args.checkpoint, args.stats_corpus)
    settings = {**model_of(handle), "n": args.sequential, "every": every, "batch_size": args.batch_size,
                "cases": args.cases, "methods": [spec.label for spec in specs],
                "hparams": {spec.label: dataclasses.asdict(spec_editor(handle, spec, args.checkpoint,
                                                                       args.stats_corpus).hparams) for spec in specs}}
    summary = write_sequences(args.out, runs, settings, args.batch_size, overwrite=args.force)
    print(sequence_table(summary))
    print(f"\n{args.sequential} edits in sequence, measured every {every} "
          f"-> {args.out}/sequential.{{jsonl,json,md,png,svg}}")
    return 0


def cmd_mend_train(args) -> int:
    handle = open_model_of(args)
    model, facts = handle.bridge, handle.facts
    if facts is None:
        raise ValueError(f"MEND {NO_TRAINING_FACTS}")
    hparams = method_hparams("mend", args.hparams)
    fingerprint = handle.fingerprint()
    if args.out and Path(args.out).exists():
        raise FileExistsError(f"{args.out} already exists; give a new directory")
    existing = found_checkpoint_dir(model, hparams, fingerprint)
    if not args.out and existing.exists():
        print(f"a MEND editor for this model and these hyperparameters is already at {existing}")
        return 0
    directory = Path(args.out) if args.out else default_checkpoint_dir(model, hparams, fingerprint)
    checkpoint = directory.with_name(directory.name + ".training.pt")
    if checkpoint.exists() and not (args.resume or args.force):
        raise FileExistsError(f"{checkpoint} holds an interrupted training of this editor; pass --resume to "
                              "continue it or --force to start over")
    network, report = train_mend(model, facts, hparams, checkpoint=checkpoint, resume=args.resume,
                                 identity={"model_fingerprint": fingerprint, "hparams": dataclasses.asdict(hparams)})
    save_mend(network, hparams, fingerprint, report, directory)
    checkpoint.unlink(missing_ok=True)
    last_nll, last_kl = report["nll_kl_every_50_steps"][-1]
    print(f"MEND editor trained in {report['train_seconds']} s ({report['edits_seen']} edits; last 50 steps: "
          f"paraphrase NLL {last_nll:.3f}, locality KL {last_kl:.4f}) -> {directory}")
    return 0


def cmd_bench_mend(args) -> int:
    handle = open_model_of(args)
    cases = load_edit_cases(args.cases, handle.world)[: args.n]
    result = bench_mend(cases, editor_of(args, handle, "mend", args.hparams), editor_of(args, handle, "rome"))
    return print_result(args, result, f"median edit over {result['n_edits']} edits: MEND "
                        f"{result['mend_edit_s'] * 1000:.1f} ms, ROME {result['rome_edit_s'] * 1000:.1f} ms "
                        f"(key statistics in hand); ratio {result['latency_ratio']:.3f}")


def cmd_bench_rome(args) -> int:
    handle = open_model_of(args)
    cases = load_edit_cases(args.cases, handle.world)[: args.n]
    result = bench_rome(handle.bridge, cases, editor_of(args, handle, "rome", args.hparams))
    return print_result(args, result, f"ROME at layer {result['layer']}: key statistics over "
                        f"{result['key_stats_tokens']} tokens {result['key_statistics_s']:.2f} s (once per layer, "
                        f"then cached); median edit {result['median_edit_s']:.2f} s and median evaluation "
                        f"{result['median_eval_s']:.2f} s over {result['n_edits']} edits")


def cmd_bench_workers(args) -> int:
    from workbench.app.workers_bench import bench_workers

    handle = open_model_of(args)
    cases = load_edit_cases(args.cases, handle.world)[: args.n]
    result = bench_workers(handle, cases, MethodSpec(args.method, args.method, None, hparams=args.hparams),
                           args.workers, args.ray_address)
    workers = args.workers
    return print_result(args, result, (
        f"{result['method']} on {result['n_cases']} cases ({result['cpus']} CPUs, {result['cpu']}): 1 worker "
        f"{result['workers_1_s']:.1f} s, {workers} workers {result[f'workers_{workers}_s']:.1f} s (of which starting "
        f"{result['workers_1_ready_s']:.1f} s and {result[f'workers_{workers}_ready_s']:.1f} s): speedup "
        f"{result[f'speedup_{workers}_vs_1']:.2f}x; metrics agree to {result['max_metric_difference']:.1e}"))
