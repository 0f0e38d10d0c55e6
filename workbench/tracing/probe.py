"""Linear probes at a subject's last token: is an attribute decodable there, layer by layer?

For every subject, the residual stream after each layer (``resid_post``) is read at the last
token of the subject's name alone, after BOS: causal attention makes that the state at the name's
last token of any text that starts with the name. For each base relation, a multinomial logistic
regression per layer (full-batch Adam, features standardised on the train subjects) learns the
object from the train-split subjects' states and is scored on the test-split subjects', whose
facts it never saw. ``chance`` is the share of the most frequent object among the train subjects.

Decodable is not the same as used (Allen-Zhu and Li, "Physics of language models" 3.1): the
causal trace and attention knockout say what the model reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.core.sites import stream_hook
from workbench.model.tokens import encode_prompt
from workbench.world import World, relation


@torch.no_grad()
def name_states(model, names: Sequence[str]) -> Float[Tensor, "layer name d_model"]:
    """The residual stream after every layer at the last token of each name (BOS first)."""
    hooks = [stream_hook("resid", layer) for layer in range(model.cfg.n_layers)]
    states = []
    for name in names:
        ids = torch.tensor([encode_prompt(model.tokenizer, name)], device=model.W_E.device)
        _, cache = model.run_with_cache(ids, names_filter=hooks)
        states.append(torch.stack([cache[hook][0, -1].float().cpu() for hook in hooks]))
    return torch.stack(states, dim=1)


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, n_classes: int,
                   steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-3, seed: int = 0) -> float:
    """Test accuracy of a logistic-regression probe trained on ``(train_x, train_y)``."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(train_x.shape[1], n_classes, generator=generator)).requires_grad_()
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(train_x @ weight + bias, train_y).backward()
            optimizer.step()
    with torch.no_grad():
        return ((test_x @ weight + bias).argmax(-1) == test_y).float().mean().item()


def attribute_probes(model, world: World, relations: Sequence[str] | None = None, steps: int = 300) -> dict:
    """``{relation: {"accuracy": [per layer], "chance": float, "n_train", "n_test"}}`` for every
    base relation (or ``relations``), see the module docstring."""
    names = [entity.name for entity in world.subjects()]
    states = dict(zip(names, name_states(model, names).unbind(1)))
    chosen = relations or sorted({fact.relation for fact in world.facts if relation(fact.relation).is_base})
    results = {}
    for name in chosen:
        facts = [f for f in world.facts if f.relation == name]
        objects = sorted({f.object for f in facts})
        split = {part: [f for f in facts if world.split_of(f.subject) == part] for part in ("train", "test")}
        x = {part: torch.stack([states[f.subject] for f in split[part]], dim=1) for part in split}
        y = {part: torch.tensor([objects.index(f.object) for f in split[part]]) for part in split}
        accuracy = [probe_accuracy(x["train"][layer], y["train"], x["test"][layer], y["test"], len(objects), steps)
                    for layer in range(model.cfg.n_layers)]
        chance = torch.bincount(y["train"], minlength=len(objects)).max().item() / len(y["train"])
        results[name] = {"accuracy": [round(a, 4) for a in accuracy], "chance": round(chance, 4),
                         "n_train": len(y["train"]), "n_test": len(y["test"])}
    return results


def mean_accuracy_by_layer(probes: dict) -> list[float]:
    """The mean over relations of ``attribute_probes``' accuracy, per layer."""
    accuracies = [probe["accuracy"] for probe in probes.values()]
    return [round(sum(layer) / len(accuracies), 4) for layer in zip(*accuracies)]
