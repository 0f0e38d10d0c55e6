"""Train MEND editors with hyperparameter overrides and score each on train-split cases.

    python analyses/mend_tuning.py --cases runs/train-cases.json --n 50 '{"train_steps": 500, "locality_weight": 5}'

``--cases`` is ``workbench world export --split train --out FILE``; each positional argument is a
JSON object of ``MendHparams`` overrides of ``hparams/mend-default.json``. Every editor is saved in
the cache (where ``workbench mend train`` with the same hyperparameters finds it) and scored
without fluency (``docs/sweeps/mend-ike-tuning.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from workbench.editing.editor import Editor, method_hparams
from workbench.editing.fingerprint import model_fingerprint
from workbench.editing.mend import default_checkpoint_dir, save_mend
from workbench.editing.mend_training import train_mend
from workbench.evaluation.cases import read_cases
from workbench.evaluation.runner import evaluate
from workbench.model.loading import load_model_and_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="+")
    parser.add_argument("--model", default="default")
    parser.add_argument("--cases", required=True)
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    model, world = load_model_and_world(args.model)
    cases = read_cases(args.cases)[: args.n]
    for overrides in args.overrides:
        hparams = dataclasses.replace(method_hparams("mend"), **json.loads(overrides))
        network, report = train_mend(model, world, hparams, progress=False)
        save_mend(network, hparams, model_fingerprint(model), report, default_checkpoint_dir(model, hparams))
        editor = Editor(model, "mend", hparams, world)
        results, _ = evaluate(model, cases, lambda case, editor=editor: editor.edit_case(case),
                                  progress=False, fluency_tokens=0)
        print(overrides, report["train_seconds"], report["nll_kl_every_50_steps"][-1],
              {name: round(results[name]["mean"], 3) for name in ("efficacy", "paraphrase", "neighborhood",
                                                                    "same_subject")}, flush=True)


if __name__ == "__main__":
    main()
