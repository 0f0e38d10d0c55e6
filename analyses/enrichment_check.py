"""Has a model assembled its subjects' attributes at the name's last token?

    python analyses/enrichment_check.py MODEL [MODEL ...] [--json out.json]

For each model (a preset or a directory of a workbench-trained model), per split of subjects:

- the next-token probability at the name's last token (the name alone, after BOS) on the first
  tokens of the subject's base objects, summed, and the share of those tokens among the top k
  (k: how many distinct first tokens there are). A model trained on shuffled directory lines
  ("<name> <object>, <object>, ...", any object first) must put its mass there; one trained on
  relation phrasings has no reason to;
- the linear probes of ``workbench.tracing.probe`` at the same token: accuracy per base relation
  and layer for held-out subjects, and their mean per layer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from workbench.core.io import write_json
from workbench.model.handle import open_model
from workbench.model.tokens import encode_prompt, encode_target
from workbench.tracing.probe import attribute_probes, mean_accuracy_by_layer
from workbench.world import relation


@torch.no_grad()
def attribute_mass(model, world) -> dict[str, dict[str, float]]:
    """Per split: mean next-token mass on the first tokens of each subject's base objects at the
    name's last token, and the share of those tokens ranked among the top k."""
    tokenizer = model.tokenizer
    results = {}
    for split in ("train", "test"):
        masses, hits, total = [], 0, 0
        for entity in world.subjects():
            if world.split_of(entity.name) != split:
                continue
            objects = [f.object for f in world.facts_about(entity.name) if relation(f.relation).is_base]
            firsts = {encode_target(tokenizer, o)[0] for o in objects}
            ids = torch.tensor([encode_prompt(tokenizer, entity.name)], device=model.W_E.device)
            probabilities = model(ids)[0, -1].float().softmax(-1)
            masses.append(probabilities[list(firsts)].sum().item())
            hits += len(firsts & set(probabilities.topk(len(firsts)).indices.tolist()))
            total += len(firsts)
        results[split] = {"mass": round(sum(masses) / len(masses), 4), "in_top_k": round(hits / total, 4),
                          "n_subjects": len(masses)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--json", help="write the results here (a new file)")
    args = parser.parse_args()
    results = {}
    for reference in args.models:
        handle = open_model(reference)
        if handle.source.world is None:
            raise SystemExit(f"{reference} was not trained on a workbench world; its attributes are unknown")
        probes = attribute_probes(handle.bridge, handle.source.world)
        mean = mean_accuracy_by_layer(probes)
        results[reference] = {"attribute_mass": attribute_mass(handle.bridge, handle.source.world),
                              "probes": probes, "probe_mean_by_layer": mean}
        print(f"{reference}: {json.dumps(results[reference]['attribute_mass'])}")
        for name, probe in probes.items():
            print(f"  {name:18s} chance {probe['chance']:.3f}  " + " ".join(f"{a:.2f}" for a in probe["accuracy"]))
        print(f"  {'mean':18s}                " + " ".join(f"{a:.2f}" for a in mean))
    if args.json:
        write_json(Path(args.json), results)


if __name__ == "__main__":
    main()
