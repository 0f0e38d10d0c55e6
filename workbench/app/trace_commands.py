"""The ``workbench trace``, ``locate`` and ``bench tracing`` commands (argument parsing is in ``cli``)."""

from __future__ import annotations

import dataclasses
import json

import torch

from workbench.app.options import open_model_of, run_options
from workbench.app.output import print_result
from workbench.app.runs import RunOptions, SweepJob, TraceJob, model_of, run_job
from workbench.app.trace_bench import bench_tracing
from workbench.core.io import refuse_existing, write_json
from workbench.core.plotting import figure_paths
from workbench.model.handle import ModelHandle
from workbench.tracing.average import average_of, average_trace, known_facts_to_trace
from workbench.tracing.cases import load_facts
from workbench.tracing.locator import locate_from_effects, locate_from_trace
from workbench.tracing.plots import plot_average, plot_trace
from workbench.tracing.trace import TraceConfig, TraceResult, trace_fact
from workbench.world import export_edit_cases


def _trace_config(args) -> TraceConfig:
    return TraceConfig(samples=args.samples, noise_scale=args.noise, window=args.window,
                       kinds=tuple(k.strip() for k in args.kinds.split(",")))


def refuse_existing_outputs(args) -> None:
    """Check ``--out`` and ``--plot`` before any work, so a refusal never comes after a long run."""
    paths = ([args.out] if args.out else []) + (figure_paths(args.plot) if args.plot else [])
    refuse_existing(paths, args.force)


def cmd_trace(args) -> int:
    if args.action == "average":
        return cmd_trace_average(args)
    if not args.prompt or not args.subject:
        raise ValueError("workbench trace needs --prompt and --subject (or the 'average' action)")
    refuse_existing_outputs(args)
    bridge = open_model_of(args).bridge
    result = trace_fact(bridge, args.prompt, args.subject, args.answer, _trace_config(args),
                        torch.Generator().manual_seed(args.seed))
    location = locate_from_trace(bridge, result) if "mlp" in result.grids else None
    payload = {**result.to_dict(), "location": location.to_dict() if location else None}
    if args.out:
        write_json(args.out, payload, args.force)
    if args.plot:
        plot_trace(result, args.plot, args.force)
    if args.json:
        print(json.dumps(payload, indent=1))
        return 0
    print(f"{args.prompt!r} -> {result.answer!r}: clean p = {result.clean_prob:.3f}, "
          f"corrupted p = {result.corrupted_prob:.3f} ({result.config.samples} noise samples, "
          f"noise std {result.noise_std:.3f})")
    start, end = result.subject_span
    for kind, grid in result.grids.items():
        print(f"\n{kind}: p({result.answer!r}) with one state restored (rows: tokens, columns: layers)")
        for position, token in enumerate(result.tokens):
            mark = "*" if start <= position < end else " "
            print(f"  {mark}{token!r:>16} " + " ".join(f"{p:5.2f}" for p in grid[position]))
    if location:
        print(f"\nlocator: layer {location.site.layer} ({location.site.module})")
        if location.warning:
            print(f"warning: {location.warning}")
    return 0


def cmd_trace_average(args) -> int:
    if not args.out:
        raise ValueError("workbench trace average needs --out FILE")
    refuse_existing_outputs(args)
    handle = open_model_of(args)
    bridge, config = handle.bridge, _trace_config(args)
    facts = load_facts(args.cases, handle.world)
    chosen = known_facts_to_trace(bridge, facts, args.n)
    job = TraceJob(**model_of(handle), config=config, seed=args.seed)
    settings = {"command": "trace average", "config": dataclasses.asdict(config), "seed": args.seed}
    rows, journal = run_job(job, handle, list(enumerate(chosen)), settings, run_options(args, out_is_file=True),
                            "tracing facts")
    average = average_of([TraceResult.from_dict(row["trace"], config) for row in rows], len(facts), config)
    payload = average.to_dict()
    if "mlp" in average.effects:
        payload["location"] = locate_from_effects(bridge, average.effects["mlp"]).to_dict()
    write_json(args.out, payload, args.force)
    if args.plot:
        plot_average(average, args.plot, args.force)
    journal.close()
    print(f"averaged {average.n_facts} known facts (of {average.n_candidates}) into {args.out}")
    if "location" in payload:
        print(f"locator: layer {payload['location']['layer']}"
              + (f"\nwarning: {payload['location']['warning']}" if payload["location"]["warning"] else ""))
    return 0


def _location_by_trace(args, handle: ModelHandle):
    bridge = handle.bridge
    config = TraceConfig(samples=args.samples, kinds=("mlp",))
    if args.prompt or args.subject:
        if not (args.prompt and args.subject):
            raise ValueError("give both --prompt and --subject, or --cases")
        return locate_from_trace(bridge, trace_fact(bridge, args.prompt, args.subject, None, config,
                                                    torch.Generator().manual_seed(args.seed)))
    average = average_trace(bridge, load_facts(args.cases, handle.world), args.n, config, args.seed)
    return locate_from_effects(bridge, average.effects["mlp"])


def _sweep_layers(text: str | None, n_layers: int) -> list[int]:
    if not text:
        return list(range(n_layers))
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--layers must be comma-separated layer numbers, got {text!r}") from None


def _location_by_sweep(args, handle: ModelHandle) -> dict:
    from workbench.editing.editor import Editor
    from workbench.evaluation.sweep import best_layer, check_sweep_cases, plot_layer_sweep, sweep_items, sweep_rows
    from workbench.world.cases import load_edit_cases

    if args.resume and not args.out:
        raise ValueError("--resume continues the sweep whose --out file it names: give --out")
    cases = load_edit_cases(args.cases, handle.world)[: args.sweep_cases]
    check_sweep_cases(handle.bridge, cases)
    layers = _sweep_layers(args.layers, handle.bridge.cfg.n_layers)
    editor = Editor.for_model(handle, args.method, args.hparams, stats_corpus=args.stats_corpus)
    job = SweepJob(**model_of(handle), method=args.method, hparams=args.hparams, stats_corpus=args.stats_corpus)
    settings = {"command": "locate --sweep", "method": args.method, "layers": layers,
                "hparams": dataclasses.asdict(editor.hparams), "stats_corpus": args.stats_corpus}
    options = run_options(args, out_is_file=True) if args.out else RunOptions(None, workers=args.workers,
                                                                               address=args.ray_address)
    item_rows, journal = run_job(job, handle, sweep_items(cases, layers), settings, options,
                                 f"{args.method} layer sweep")
    rows = sweep_rows(layers, len(cases), item_rows, cases[0].source)
    if args.plot:
        plot_layer_sweep(rows, args.plot, f"{args.method.upper()} layer sweep, {len(cases)} cases per layer",
                         args.force)
    return {"method": args.method, "n_cases": len(cases), "best_layer": best_layer(rows), "layers": rows}, journal


def cmd_locate(args) -> int:
    refuse_existing_outputs(args)
    handle = open_model_of(args)
    location = _location_by_trace(args, handle)
    payload, journal = location.to_dict(), None
    if args.sweep:
        payload["sweep"], journal = _location_by_sweep(args, handle)
    if args.out:
        write_json(args.out, payload, args.force)
    if journal is not None:
        journal.close()
    if args.json:
        print(json.dumps(payload, indent=1))
        return 0
    print(f"by trace: layer {location.site.layer}, {location.site.module} ({location.site.orientation}), "
          f"key at {location.site.key_hook}")
    print(f"MLP effect at the subject's last token: {location.last_subject_effect:.3f}; strongest MLP effect "
          f"{location.strongest_effect:.3f} at the {location.strongest_group}, layer {location.strongest_layer}")
    if location.warning:
        print(f"warning: {location.warning}")
    if args.sweep:
        from workbench.evaluation.sweep import sweep_table

        sweep = payload["sweep"]
        print(f"\nby {sweep['method'].upper()} edit sweep ({sweep['n_cases']} cases per layer): "
              f"layer {sweep['best_layer']}\n{sweep_table(sweep['layers'])}")
    return 0


def cmd_bench_tracing(args) -> int:
    handle = open_model_of(args)
    bridge, world = handle.bridge, handle.world
    if args.prompt:
        prompt, subject, answer = args.prompt, args.subject, args.answer
    elif world is not None:
        case = export_edit_cases(world, "test")[0]
        prompt, subject, answer = case["prompt"], case["subject"], case["ground_truth"]
    else:
        raise ValueError("give --prompt, --subject and --answer for a model without a fact world")
    result = bench_tracing(bridge, prompt, subject, answer, repeats=args.repeats)
    return print_result(args, result, (
        f"residual grid of {result['resid_cells']} cells: batched {result['batched_resid_grid_s']:.3f} s, "
        f"transformer_lens.patching {result['patching_resid_grid_s']:.3f} s: "
        f"{result['speedup_vs_patching']:.1f}x (grids differ by at most {result['max_abs_difference']:.1e})\n"
        f"full trace, {result['trace_rows']} rows: {result['trace_rows_per_s']:.0f} rows/s traced vs "
        f"{result['plain_forward_rows_per_s']:.0f} rows/s plain forward: {result['throughput_vs_forward']:.2f}"))


def add_trace_options(command) -> None:
    command.add_argument("--model", default=None)
    command.add_argument("--samples", type=int, default=10, help="noise samples per restoration")
    command.add_argument("--noise", type=float, default=3.0, help="noise scale, in token-embedding std")
    command.add_argument("--window", type=int, default=10, help="layers restored together for mlp and attn")
    command.add_argument("--kinds", default="resid,mlp,attn")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--force", action="store_true", help="replace --out if it exists")


def cmd_bench_scale(args) -> int:
    from workbench.app.scale_bench import bench_scale
    from workbench.model.presets import preset
    from workbench.world import build_world
    from workbench.world.cases import load_edit_cases

    world = build_world(preset("default").world)
    cases = load_edit_cases(None, world)[: args.n]
    result = bench_scale([size.strip() for size in args.sizes.split(",")], cases, world, args.device, args.dtype,
                         args.repeats)
    lines = [f"{result['accelerator']} ({result['device']}), {result['dtype']}, random weights:"]
    for size, row in result["sizes"].items():
        trace = row["trace"]
        lines.append(
            f"  {size} ({row['parameters'] / 1e6:.0f}M parameters): {row['prompt_tokens']}-token trace, residual "
            f"grid {trace['batched_resid_grid_s']:.2f} s vs transformer_lens.patching "
            f"{trace['patching_resid_grid_s']:.2f} s ({trace['speedup_vs_patching']:.1f}x); key statistics over "
            f"100,000 tokens {row['key_statistics_s']:.1f} s; ROME edit {row['rome_edit_s']:.2f} s; MEND edit "
            f"{row['mend_edit_s']:.3f} s; {row['eval_cases_per_s']:.2f} cases/s evaluated")
    return print_result(args, result, "\n".join(lines))
