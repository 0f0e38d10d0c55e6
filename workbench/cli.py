"""The ``workbench`` command."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from workbench.io import write_text_atomic
from workbench.model.presets import PRESETS, preset


def _load(reference):
    from workbench.model.loading import load_model, load_world, resolve_model

    resolved = resolve_model(reference)
    bridge = load_model(resolved)
    world = load_world(resolved) if isinstance(resolved, Path) else None
    return bridge, world


def cmd_model_build(args) -> int:
    from workbench.model.store import build_into, ensure_model

    if args.out:
        report = build_into(preset(args.preset), Path(args.out))
        where = Path(args.out)
    else:
        where = ensure_model(args.preset)
        report = json.loads((where / "training_report.json").read_text())
    print(f"model: {where}")
    print(f"trained in {report['train_seconds']} s, {report['tokens_seen']} tokens; "
          f"recall on corpus phrasings {report['recall_corpus']['recall']:.3f}, "
          f"on held-out phrasings {report['recall_heldout']['recall']:.3f}")
    return 0


def cmd_model_info(args) -> int:
    from workbench.model.info import model_info

    bridge, world = _load(args.model)
    info = model_info(bridge, world)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("architecture", "layers", "d_model", "d_mlp", "heads", "context", "vocabulary", "parameters"):
        print(f"{key:>16}: {info[key]}")
    for key in ("recall_corpus", "recall_heldout"):
        value = info[key]
        print(f"{key:>16}: {'n/a (no fact world)' if value is None else f'{value:.3f}'}")
    return 0


def cmd_world_export(args) -> int:
    from workbench.model.loading import load_world, resolve_model
    from workbench.world import build_world, export_edit_cases

    if args.model:
        world = load_world(resolve_model(args.model))
        if world is None:
            raise SystemExit(f"{args.model} is not a workbench-trained model: it has no fact world")
    else:
        world = build_world(preset(args.preset).world)
    cases = export_edit_cases(world, args.split)
    write_text_atomic(args.out, json.dumps(cases, indent=1), overwrite=args.force)
    print(f"wrote {len(cases)} edit cases ({args.split or 'all splits'}) to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from workbench.model.tokens import score_targets, top_next_tokens
    from workbench.world import export_edit_cases

    bridge, world = _load(args.model)
    if world is None:
        raise SystemExit("the demo needs a workbench-trained model (it reads the model's fact world)")
    cases = export_edit_cases(world, "test")[: args.facts]
    print(f"What the model believes about {len(cases)} facts of its world (test split):\n")
    scores = score_targets(bridge, bridge.tokenizer, [c["prompt"] for c in cases],
                           [c["ground_truth"] for c in cases])
    for case, log_prob in zip(cases, scores.log_prob.tolist()):
        top = ", ".join(f"{text!r} {p:.2f}" for text, p in top_next_tokens(bridge, bridge.tokenizer, case["prompt"], 3))
        print(f"  {case['prompt']} ...")
        print(f"      world says {case['ground_truth']!r}: p = {math.exp(log_prob):.3f}; top next tokens: {top}")
    return 0


def _trace_config(args):
    from workbench.tracing.trace import TraceConfig

    return TraceConfig(samples=args.samples, noise_scale=args.noise, window=args.window,
                       kinds=tuple(k.strip() for k in args.kinds.split(",")))


def _write_json(path, payload, force=False) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1), overwrite=force)


def cmd_trace(args) -> int:
    import torch

    from workbench.tracing.locator import locate_from_trace
    from workbench.tracing.plots import plot_trace
    from workbench.tracing.trace import trace_fact

    if args.action == "average":
        return cmd_trace_average(args)
    if not args.prompt or not args.subject:
        raise ValueError("workbench trace needs --prompt and --subject (or the 'average' action)")
    bridge, _ = _load(args.model)
    result = trace_fact(bridge, args.prompt, args.subject, args.answer, _trace_config(args),
                        torch.Generator().manual_seed(args.seed))
    location = locate_from_trace(bridge, result) if "mlp" in result.grids else None
    payload = {**result.to_dict(), "location": location.to_dict() if location else None}
    if args.out:
        _write_json(args.out, payload, args.force)
    if args.plot:
        plot_trace(result, args.plot)
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
    import torch

    from workbench.tracing.average import average_trace
    from workbench.tracing.cases import load_facts
    from workbench.tracing.locator import locate_from_effects
    from workbench.tracing.plots import plot_average

    if not args.out:
        raise ValueError("workbench trace average needs --out FILE")
    bridge, world = _load(args.model)
    average = average_trace(bridge, load_facts(args.cases, world), args.n, _trace_config(args),
                            torch.Generator().manual_seed(args.seed))
    payload = average.to_dict()
    if "mlp" in average.effects:
        payload["location"] = locate_from_effects(bridge, average.effects["mlp"]).to_dict()
    _write_json(args.out, payload, args.force)
    if args.plot:
        plot_average(average, args.plot)
    print(f"averaged {average.n_facts} known facts (of {average.n_candidates}) into {args.out}")
    if "location" in payload:
        print(f"locator: layer {payload['location']['layer']}"
              + (f"\nwarning: {payload['location']['warning']}" if payload["location"]["warning"] else ""))
    return 0


def cmd_locate(args) -> int:
    import torch

    from workbench.tracing.average import average_trace
    from workbench.tracing.cases import load_facts
    from workbench.tracing.locator import locate_from_effects, locate_from_trace
    from workbench.tracing.trace import TraceConfig, trace_fact

    bridge, world = _load(args.model)
    config = TraceConfig(samples=args.samples, kinds=("mlp",))
    generator = torch.Generator().manual_seed(args.seed)
    if args.prompt or args.subject:
        if not (args.prompt and args.subject):
            raise ValueError("give both --prompt and --subject, or --cases")
        location = locate_from_trace(bridge, trace_fact(bridge, args.prompt, args.subject, None, config, generator))
    else:
        average = average_trace(bridge, load_facts(args.cases, world), args.n, config, generator)
        location = locate_from_effects(bridge, average.effects["mlp"])
    payload = location.to_dict()
    if args.json:
        print(json.dumps(payload, indent=1))
        return 0
    print(f"edit site: layer {location.site.layer}, {location.site.module} ({location.site.orientation}), "
          f"key at {location.site.key_hook}")
    print(f"MLP effect at the subject's last token: {location.last_subject_effect:.3f}; strongest MLP effect "
          f"{location.strongest_effect:.3f} at the {location.strongest_group}, layer {location.strongest_layer}")
    if location.warning:
        print(f"warning: {location.warning}")
    return 0


def cmd_bench(args) -> int:
    from workbench.tracing.bench import bench_tracing
    from workbench.world import export_edit_cases

    bridge, world = _load(args.model)
    if args.prompt:
        prompt, subject, answer = args.prompt, args.subject, args.answer
    elif world is not None:
        case = export_edit_cases(world, "test")[0]
        prompt, subject, answer = case["prompt"], case["subject"], case["ground_truth"]
    else:
        raise ValueError("give --prompt, --subject and --answer for a model without a fact world")
    result = bench_tracing(bridge, prompt, subject, answer, repeats=args.repeats)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"residual grid of {result['resid_cells']} cells: batched {result['batched_resid_grid_s']:.3f} s, "
          f"transformer_lens.patching {result['patching_resid_grid_s']:.3f} s: "
          f"{result['speedup_vs_patching']:.1f}x (grids differ by at most {result['max_abs_difference']:.1e})")
    print(f"full trace, {result['trace_rows']} rows: {result['trace_rows_per_s']:.0f} rows/s traced vs "
          f"{result['plain_forward_rows_per_s']:.0f} rows/s plain forward: {result['throughput_vs_forward']:.2f}")
    return 0


def _add_trace_options(command) -> None:
    command.add_argument("--model", default=None)
    command.add_argument("--samples", type=int, default=10, help="noise samples per restoration")
    command.add_argument("--noise", type=float, default=3.0, help="noise scale, in token-embedding std")
    command.add_argument("--window", type=int, default=10, help="layers restored together for mlp and attn")
    command.add_argument("--kinds", default="resid,mlp,attn")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--force", action="store_true", help="replace --out if it exists")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="workbench", description="Locate and edit factual knowledge "
                                   "in transformer language models.")
    commands = root.add_subparsers(dest="command", required=True)

    model = commands.add_parser("model", help="build and inspect models").add_subparsers(dest="action", required=True)
    build = model.add_parser("build", help="train an embedded model (cached) or into --out")
    build.add_argument("--preset", choices=sorted(PRESETS), default="default")
    build.add_argument("--out", help="a new directory to write the model to (default: the cache)")
    build.set_defaults(func=cmd_model_build)
    info = model.add_parser("info", help="architecture, size and fact recall of a model")
    info.add_argument("model", nargs="?", default=None, help="default | tiny | local directory | hub name")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_model_info)

    world = commands.add_parser("world", help="the synthetic fact world").add_subparsers(dest="action", required=True)
    export = world.add_parser("export", help="export edit cases as JSON")
    export.add_argument("--preset", choices=sorted(PRESETS), default="default")
    export.add_argument("--model", help="read the world of this workbench-trained model instead")
    export.add_argument("--split", choices=("train", "test"), default=None)
    export.add_argument("--out", required=True)
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    export.set_defaults(func=cmd_world_export)

    trace = commands.add_parser("trace", help="causal tracing of one fact, or 'average' over many")
    trace.add_argument("action", nargs="?", choices=["average"], help="average traces over many known facts")
    trace.add_argument("--prompt")
    trace.add_argument("--subject")
    trace.add_argument("--answer", help="default: the model's own top prediction")
    trace.add_argument("--cases", help="(average) a JSON list of edit cases; default: the world's test split")
    trace.add_argument("--n", type=int, default=100, help="(average) how many known facts to trace")
    trace.add_argument("--json", action="store_true")
    trace.add_argument("--out", help="write the result as JSON")
    trace.add_argument("--plot", help="write heatmaps (PNG and SVG)")
    _add_trace_options(trace)
    trace.set_defaults(func=cmd_trace)

    locate = commands.add_parser("locate", help="the MLP weight to edit, from a trace or an average")
    locate.add_argument("--prompt")
    locate.add_argument("--subject")
    locate.add_argument("--cases")
    locate.add_argument("--n", type=int, default=100)
    locate.add_argument("--samples", type=int, default=10)
    locate.add_argument("--seed", type=int, default=0)
    locate.add_argument("--model", default=None)
    locate.add_argument("--json", action="store_true")
    locate.set_defaults(func=cmd_locate)

    bench = commands.add_parser("bench", help="benchmarks (both sides of every ratio in one run)")
    bench.add_argument("target", choices=["tracing"])
    bench.add_argument("--model", default=None)
    bench.add_argument("--prompt")
    bench.add_argument("--subject")
    bench.add_argument("--answer")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)

    demo = commands.add_parser("demo", help="load (or build) the default model and show what it knows")
    demo.add_argument("--model", default=None)
    demo.add_argument("--facts", type=int, default=8)
    demo.set_defaults(func=cmd_demo)
    return root


def main(argv: list[str] | None = None) -> int:
    from workbench.model.loading import ModelLoadError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, ModelLoadError) as error:
        print(f"workbench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
