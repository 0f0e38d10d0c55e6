"""Train MEND editors with hyperparameter overrides and score each on the validation subjects' cases.

    python analyses/mend_tuning.py --cases runs/train-cases.json --n 50 '{"train_steps": 500, "locality_weight": 5}'

``--cases`` is ``workbench world export --split train --out FILE``; only the cases of the subjects
held out from MEND's training (``mend_training.validation_subjects``) are scored, the first ``--n``
of them. Each positional argument is a JSON object of ``MendHparams`` overrides of ``--hparams``
(default ``hparams/mend-default.json``). An editor already in the cache (where ``workbench mend
train`` with the same hyperparameters puts it) is used as it is; a new one is trained and saved
there. Scored without fluency (``docs/sweeps/mend-ike-tuning.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from workbench.core.cases import read_cases
from workbench.core.fingerprint import model_fingerprint
from workbench.editing.editor import Editor
from workbench.editing.mend import CONFIG_FILE, default_checkpoint_dir, save_mend
from workbench.editing.mend_training import train_mend, validation_subjects
from workbench.editing.registry import method_hparams
from workbench.evaluation.runner import evaluate
from workbench.model.handle import open_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="+")
    parser.add_argument("--model", default="default")
    parser.add_argument("--cases", required=True)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--hparams", default=None, help="the base hyperparameter file")
    args = parser.parse_args()
    handle = open_model(args.model)
    model, world = handle.bridge, handle.world
    held_out = validation_subjects(world)
    cases = [case for case in read_cases(args.cases) if case.request.subject in held_out][: args.n]
    print(f"{len(cases)} cases of {len(held_out)} validation subjects", flush=True)
    for overrides in args.overrides:
        hparams = dataclasses.replace(method_hparams("mend", args.hparams), **json.loads(overrides))
        directory = default_checkpoint_dir(model, hparams)
        if (directory / CONFIG_FILE).is_file():
            report = json.loads((directory / CONFIG_FILE).read_text())["training"]
        else:
            network, report = train_mend(model, world, hparams, progress=False)
            save_mend(network, hparams, model_fingerprint(model), report, directory)
        editor = Editor.for_model(handle, "mend", hparams)
        results, _ = evaluate(model, cases, lambda case, editor=editor: editor.edit_case(case),
                                  progress=False, fluency_tokens=0)
        print(overrides, report["train_seconds"], report["nll_kl_every_50_steps"][-1], report["kept_step"],
              {name: round(results[name]["mean"], 3) for name in ("efficacy", "paraphrase", "neighborhood",
                                                                    "same_subject")}, flush=True)


if __name__ == "__main__":
    main()
