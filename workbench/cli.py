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
