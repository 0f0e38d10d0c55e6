"""IKE with ``k`` demonstrations on the first test cases of one or more models.

    python analyses/ike_probe.py --k 0 8 --n 30 default runs/in-context/updates-0.1

Prints efficacy, paraphrase, neighbourhood and same-subject retention per model and ``k``
(``--proportions``, default 1:3:4; no fluency); the numbers of ``docs/sweeps/mend-ike-tuning.md``.
"""

from __future__ import annotations

import argparse
import dataclasses

from workbench.editing.editor import Editor
from workbench.editing.registry import method_hparams
from workbench.evaluation.runner import evaluate
from workbench.model.handle import open_model
from workbench.world.cases import load_edit_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--proportions", type=int, nargs=3, default=[1, 3, 4], help="copy, update, retain")
    args = parser.parse_args()
    for reference in args.models:
        handle = open_model(reference)
        model, world = handle.bridge, handle.world
        cases = load_edit_cases(None, world)[: args.n]
        for k in args.k:
            hparams = dataclasses.replace(method_hparams("ike"), k=k, proportions=tuple(args.proportions))
            editor = Editor.for_model(handle, "ike", hparams)
            results, _ = evaluate(model, cases, lambda case, editor=editor: editor.edit_case(case),
                                      progress=False, fluency_tokens=0)
            print(reference, k, {name: round(results[name]["mean"], 3) for name in (
                "efficacy", "paraphrase", "neighborhood", "same_subject")}, flush=True)


if __name__ == "__main__":
    main()
