"""IKE's two ablations on one model: with and without the request as a last demonstration, and
retrieved (kNN) against random demonstrations.

    python analyses/ike_ablations.py --model default --n 200

Prints one Markdown row per variant (efficacy, paraphrase, neighbourhood, same-subject retention,
each with its 95% interval; no fluency) over the first ``n`` test cases, the numbers of the IKE
ablation table in ``docs/ike-ablations.md``.
"""

from __future__ import annotations

import argparse
import dataclasses

from workbench.editing.editor import Editor
from workbench.editing.registry import method_hparams
from workbench.evaluation.runner import evaluate, format_metric
from workbench.model.handle import open_model
from workbench.world.cases import load_edit_cases

METRICS = ("efficacy", "paraphrase", "neighborhood", "same_subject")
VARIANTS = {"request demonstration, kNN (default)": {"request_demonstration": True, "retrieval": "knn"},
            "no request demonstration, kNN": {"request_demonstration": False, "retrieval": "knn"},
            "request demonstration, random": {"request_demonstration": True, "retrieval": "random"},
            "no request demonstration, random": {"request_demonstration": False, "retrieval": "random"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    handle = open_model(args.model)
    model, world = handle.bridge, handle.world
    cases = load_edit_cases(None, world)[: args.n]
    print(f"| IKE variant ({len(cases)} cases) | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for name, overrides in VARIANTS.items():
        editor = Editor.for_model(handle, "ike", dataclasses.replace(method_hparams("ike"), **overrides))
        results, _ = evaluate(model, cases, editor.edit_case, progress=False, fluency_tokens=0)
        print(f"| {name} | " + " | ".join(format_metric(results[metric]) for metric in METRICS) + " |", flush=True)


if __name__ == "__main__":
    main()
