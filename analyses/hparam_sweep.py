"""Sweep one hyperparameter of an editing method and tabulate every value's metrics.

    python analyses/hparam_sweep.py --method ft-l --param norm_constraint \
        --values 0.0005,0.001,0.002,0.005,0.01 --n 50 --out docs/sweeps/ft-l-norm-constraint

Each value edits the same first ``n`` cases of the model's train split (``--split``; tune on
train, report on test) (at the hyperparameter
file's layer unless ``--layer``) and is scored like the layer sweep: the harmonic mean of efficacy,
paraphrase and neighbourhood. Writes ``<out>.json`` (every value's aggregates) and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses

from workbench.core.cases import parse_cases
from workbench.core.io import refuse_existing, write_json, write_text_atomic
from workbench.editing.editor import Editor
from workbench.editing.registry import METHODS
from workbench.evaluation.runner import HEADLINE_METRICS, evaluate
from workbench.evaluation.sweep import sweep_score, sweep_table
from workbench.model.handle import open_model
from workbench.world import export_edit_cases


def parse_value(text: str):
    """A number where the text is one, ``None`` for "none", else the text."""
    if text.lower() == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    parser.add_argument("--param", required=True, help="a field of the method's hyperparameter dataclass")
    parser.add_argument("--values", required=True, help="comma-separated values ('none' for None)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--split", choices=("train", "test"), default="train", help="the world's cases to edit")
    parser.add_argument("--out", required=True, help="path without suffix for .json and .md")
    args = parser.parse_args()

    refuse_existing([f"{args.out}.json", f"{args.out}.md"])
    handle = open_model(args.model)
    model, world = handle.bridge, handle.world
    if world is None:
        raise SystemExit("the sweep edits cases of the model's fact world; this model has none")
    cases = parse_cases(export_edit_cases(world, args.split), f"the world's {args.split} split")[: args.n]
    base = Editor.for_model(handle, args.method).hparams
    if args.param not in {f.name for f in dataclasses.fields(base)}:
        raise SystemExit(f"{args.method} has no hyperparameter {args.param!r}")
    rows = []
    for value in (parse_value(text) for text in args.values.split(",")):
        editor = Editor.for_model(handle, args.method, dataclasses.replace(base, **{args.param: value}))
        results, _ = evaluate(model, cases, lambda case, e=editor: e.edit_case(case, args.layer),
                              description=f"{args.param}={value}", fluency_tokens=0)
        rows.append({"value": value, **results, "score": sweep_score(results)})
    layer = base.layer if args.layer is None else args.layer
    write_json(f"{args.out}.json", {"method": args.method, "param": args.param, "layer": layer,
                                    "split": args.split, "n_cases": len(cases), "rows": rows})
    write_text_atomic(f"{args.out}.md", sweep_table(rows, "value", HEADLINE_METRICS) + "\n")
    print(sweep_table(rows, "value", HEADLINE_METRICS))


if __name__ == "__main__":
    main()
