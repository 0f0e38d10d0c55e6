"""The ``workbench`` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from workbench.app.edit_commands import (
    cmd_bench_mend,
    cmd_bench_rome,
    cmd_bench_workers,
    cmd_compare,
    cmd_edit,
    cmd_eval,
    cmd_mend_train,
)
from workbench.app.options import add_machine_options, add_run_options, add_sequential_options, count, open_model_of
from workbench.app.trace_commands import add_trace_options, cmd_bench_scale, cmd_bench_tracing, cmd_locate, cmd_trace
from workbench.core.io import write_json
from workbench.editing.registry import LAYER_METHODS, METHODS
from workbench.model.precision import PRECISIONS
from workbench.model.presets import PRESETS, preset


def cmd_model_build(args) -> int:
    from workbench.model.precision import machine_recipe
    from workbench.model.store import (
        build_into,
        ensure_model,
        ensure_records_model,
        records_fingerprint,
        records_source,
    )

    machine = {"device": args.device, "precision": args.precision}
    where = Path(args.out) if args.out else None
    if where:
        recipe, decision = machine_recipe(preset(args.preset), **machine)
        if decision:
            print(decision, file=sys.stderr)
    if args.facts and where:
        source = records_source(args.facts, args.test_records, recipe)
        build_into(source.recipe, where, source=source,
                   fingerprint=records_fingerprint(source))
    elif args.facts:
        where = ensure_records_model(args.facts, args.test_records, args.preset, **machine)
    elif where:
        build_into(recipe, where)
    else:
        where = ensure_model(args.preset, **machine)
    report = json.loads((where / "training_report.json").read_text())
    recalls = ", ".join(f"{name.removeprefix('recall_').replace('_', ' ')} {value['recall']:.3f}"
                        for name, value in report.items() if name.startswith("recall_"))
    print(f"model: {where}")
    print(f"trained in {report['train_seconds']} s, {report['tokens_seen']} tokens; top-1 recall: {recalls}")
    return 0


def cmd_dashboard(args) -> int:
    from workbench.app.dashboard.launch import run_dashboard

    run_dashboard(args.model, args.port, args.headless, args.address, args.device, args.dtype)
    return 0


def cmd_model_info(args) -> int:
    from workbench.model.info import model_info

    handle = open_model_of(args)
    info = model_info(handle.bridge, handle.world)
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
    write_json(args.out, cases, overwrite=args.force)
    print(f"wrote {len(cases)} edit cases ({args.split or 'all splits'}) to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from workbench.app.demo import run_demo

    handle = open_model_of(args)
    if handle.world is None:
        raise SystemExit("the demo needs a workbench-trained model (it reads the model's fact world)")
    run_demo(handle, args.facts, args.plot)
    return 0


CHECKPOINT_HELP = "(mend) a trained editor's directory (default: found by the model's weights, in the cache or shipped)"
BENCHMARKS = {"tracing": cmd_bench_tracing, "rome": cmd_bench_rome, "mend": cmd_bench_mend,
              "workers": cmd_bench_workers, "scale": cmd_bench_scale}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="workbench", description="Locate and edit factual knowledge "
                                   "in transformer language models.")
    commands = root.add_subparsers(dest="command", required=True)

    model = commands.add_parser("model", help="build and inspect models").add_subparsers(dest="action", required=True)
    build = model.add_parser("build", help="train an embedded model (cached) or into --out")
    build.add_argument("--preset", choices=sorted(PRESETS), default="default")
    build.add_argument("--out", help="a new directory to write the model to (default: the cache)")
    build.add_argument("--facts", help="an edit-case file (CounterFact, zsRE, ...): train the preset's recipe on "
                                       "its records' true facts instead of the preset's synthetic world")
    build.add_argument("--test-records", type=count, help="with --facts: how many leading records are evaluated "
                                                        "(the rest train MEND and IKE; default: half)")
    build.add_argument("--device", default="cpu", help="cpu or cuda (a GPU's model is cached apart from a CPU's)")
    build.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto (default): the recipe's, but fp32 on a CPU where bf16 autocast is slower")
    build.set_defaults(func=cmd_model_build)
    info = model.add_parser("info", help="architecture, size and fact recall of a model")
    info.add_argument("model", nargs="?", default=None, help="default | tiny | local directory | hub name")
    info.add_argument("--json", action="store_true")
    add_machine_options(info)
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
    trace.add_argument("--n", type=count, default=100, help="(average) how many known facts to trace")
    trace.add_argument("--json", action="store_true")
    trace.add_argument("--out", help="write the result as JSON")
    trace.add_argument("--plot", help="write heatmaps (PNG and SVG)")
    add_trace_options(trace)
    add_machine_options(trace)
    add_run_options(trace)
    trace.set_defaults(func=cmd_trace)

    locate = commands.add_parser("locate", help="the MLP weight to edit, from a trace or an average")
    locate.add_argument("--prompt")
    locate.add_argument("--subject")
    locate.add_argument("--cases")
    locate.add_argument("--n", type=count, default=100)
    locate.add_argument("--samples", type=count, default=10)
    locate.add_argument("--seed", type=int, default=0)
    locate.add_argument("--model", default=None)
    locate.add_argument("--json", action="store_true")
    locate.add_argument("--sweep", action="store_true", help="also edit at every layer and pick the best")
    locate.add_argument("--sweep-cases", type=count, default=20, help="(sweep) cases edited at each layer")
    locate.add_argument("--layers", help="(sweep) comma-separated layers (default: all)")
    locate.add_argument("--method", choices=LAYER_METHODS, default="rome", help="(sweep) editing method")
    locate.add_argument("--hparams", help="(sweep) hyperparameter file (default hparams/<method>-default.json)")
    locate.add_argument("--stats-corpus", help="(sweep) key-statistics texts, one per line")
    locate.add_argument("--out", help="write the result as JSON")
    locate.add_argument("--plot", help="(sweep) plot the metrics per layer (PNG and SVG)")
    locate.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_run_options(locate)
    add_machine_options(locate)
    locate.set_defaults(func=cmd_locate)

    edit = commands.add_parser("edit", help="compute an edit and show predictions before and after")
    edit.add_argument("--method", choices=sorted(METHODS), default="rome")
    edit.add_argument("--model", default=None)
    edit.add_argument("--prompt", required=True)
    edit.add_argument("--subject", required=True)
    edit.add_argument("--target-new", required=True)
    edit.add_argument("--ground-truth", help="the current answer (default: the world's, for a world case)")
    edit.add_argument("--layer", help="'auto' (the locator's choice; the default) or a layer number; none for ike")
    edit.add_argument("--hparams", help="a JSON file of hyperparameters (default hparams/<method>-default.json)")
    edit.add_argument("--stats-corpus", help="texts for key statistics, one per line (default: the world's corpus)")
    edit.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    edit.add_argument("--export", metavar="DIR", help="also write the edited model to this new directory")
    edit.add_argument("--json", action="store_true")
    add_machine_options(edit)
    edit.set_defaults(func=cmd_edit)

    evaluation = commands.add_parser("eval", help="evaluate a method over edit cases")
    evaluation.add_argument("--method", choices=sorted(METHODS), required=True)
    evaluation.add_argument("--model", default=None)
    evaluation.add_argument("--cases", help="edit cases (any format); default: the world's test split")
    evaluation.add_argument("--n", type=count, default=200)
    evaluation.add_argument("--layer", default=None, help="'auto', a layer number, or (default) the hparams file's")
    evaluation.add_argument("--hparams")
    evaluation.add_argument("--stats-corpus")
    evaluation.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    evaluation.add_argument("--batch-size", type=count, default=1,
                            help="edit this many cases at once and measure each after its batch (default 1; methods "
                                 "without a batch form edit a batch's cases one after another)")
    add_sequential_options(evaluation)
    evaluation.add_argument("--out", required=True, help="directory for results.json and cases.jsonl")
    evaluation.add_argument("--force", action="store_true", help="replace existing result files")
    add_machine_options(evaluation)
    add_run_options(evaluation)
    evaluation.set_defaults(func=cmd_eval)

    compare = commands.add_parser("compare", help="several methods over the same cases: one table and chart")
    compare.add_argument("--methods", default="rome,mend,ike,ft-l",
                         help="comma-separated METHOD[@LAYER|@auto] specs (default: rome,mend,ike,ft-l)")
    compare.add_argument("--model", default=None)
    compare.add_argument("--cases", help="edit cases (any format); default: the world's test split")
    compare.add_argument("--n", type=count, default=200)
    compare.add_argument("--stats-corpus")
    compare.add_argument("--fluency-tokens", type=int, default=40,
                         help="length of the greedy generations that measure fluency (0: skip fluency)")
    compare.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    compare.add_argument("--batch-size", type=count, default=1,
                         help="with --sequential: edit this many cases at once (memit, alphaedit; default 1)")
    add_sequential_options(compare)
    compare.add_argument("--out", required=True, help="directory for comparison.{md,json,png} and per-method results")
    compare.add_argument("--force", action="store_true", help="replace existing result files")
    add_machine_options(compare)
    add_run_options(compare)
    compare.set_defaults(func=cmd_compare)

    mend = commands.add_parser("mend", help="MEND's learned editor").add_subparsers(dest="action", required=True)
    mend_train = mend.add_parser("train", help="train a MEND editor on the model's world (train split) or on the "
                                               "train records of the case file it was trained on")
    mend_train.add_argument("--model", default=None)
    mend_train.add_argument("--hparams", help="a JSON file of MEND hyperparameters (default hparams/mend-default.json)")
    mend_train.add_argument("--out", help="a new directory for the editor (default: the cache, keyed by the model)")
    mend_train.add_argument("--resume", action="store_true", help="continue the interrupted training of this "
                            "editor from its last checkpoint (saved at every validation)")
    mend_train.add_argument("--force", action="store_true", help="start over, replacing an interrupted training")
    add_machine_options(mend_train)
    mend_train.set_defaults(func=cmd_mend_train)

    bench = commands.add_parser("bench", help="benchmarks (both sides of every ratio in one run)")
    bench.add_argument("target", choices=sorted(BENCHMARKS))
    bench.add_argument("--model", default=None)
    bench.add_argument("--prompt", help="(tracing) the fact to trace; default: the world's first test case")
    bench.add_argument("--subject")
    bench.add_argument("--answer")
    bench.add_argument("--repeats", type=count, default=3, help="(tracing) timed repetitions")
    bench.add_argument("--cases", help="(rome, mend) edit cases (any format); default: the world's test split")
    bench.add_argument("--n", type=count, default=10, help="(rome, mend, workers) timed edits")
    bench.add_argument("--hparams", help="(rome, mend, workers) the method's hyperparameter file")
    bench.add_argument("--method", choices=sorted(METHODS), default="rome", help="(workers) the evaluated method")
    bench.add_argument("--workers", type=count, default=2, help="(workers) the workers compared with one")
    bench.add_argument("--ray-address", help="(workers) run the workers on this existing Ray cluster")
    bench.add_argument("--sizes", default="gpt2-xl,llama-7b",
                       help="(scale) comma-separated model sizes built with random weights: gpt2-xl, llama-7b, "
                            "tiny-gpt2, tiny-llama (default: %(default)s; give --device cuda --dtype bf16)")
    bench.add_argument("--stats-corpus", help="(rome, mend) key-statistics texts, one per line")
    bench.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    bench.add_argument("--json", action="store_true")
    add_machine_options(bench)
    bench.set_defaults(func=lambda args: BENCHMARKS[args.target](args))

    dashboard = commands.add_parser("dashboard", help="open the Streamlit dashboard (trace, edit, evaluate)")
    dashboard.add_argument("--model", default="default", help="the model it starts with (default: %(default)s)")
    dashboard.add_argument("--port", type=int, default=8501)
    dashboard.add_argument("--headless", action="store_true", help="do not open a browser")
    dashboard.add_argument("--address", default="127.0.0.1",
                           help="the address to serve on (default: this machine only); another, such as 0.0.0.0, "
                                "lets anyone who reaches it load models, edit them and export, unauthenticated")
    add_machine_options(dashboard)
    dashboard.set_defaults(func=cmd_dashboard)

    demo = commands.add_parser("demo", help="the whole story on one fact: beliefs, trace, locate, ROME, metrics")
    demo.add_argument("--model", default=None)
    demo.add_argument("--facts", type=count, default=3, help="facts whose beliefs are shown first")
    demo.add_argument("--plot", help="also write the trace heatmaps (PNG and SVG)")
    add_machine_options(demo)
    demo.set_defaults(func=cmd_demo)
    return root


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command. A termination signal ends it as Ctrl-C does: a run over many cases keeps
    what it finished and says how to resume (exit status 130)."""
    from workbench.app.workers import WorkersFailed
    from workbench.core.journal import RunInterrupted
    from workbench.model.loading import ModelLoadError

    args = parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signals can be caught
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError, ModelLoadError,
            WorkersFailed) as error:
        print(f"workbench: error: {error}", file=sys.stderr)
        return 2
    except RunInterrupted as interrupted:
        print(f"workbench: {interrupted}", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
