"""Top-1 recall of the world's facts: does the model's top next token start the object?"""

from __future__ import annotations

from collections import defaultdict

from workbench.model.tokens import first_token_is_top1
from workbench.world import World, relation


def fact_recall(model, tokenizer, world: World, which: str, batch_size: int = 256) -> dict:
    """Recall of every fact of ``world`` in every phrasing of the set ``which``.

    ``which`` is ``"corpus"`` (phrasings seen in training) or ``"heldout"`` (never seen). Returns
    ``{"recall": float, "n_prompts": int, "by_relation": {name: float}}``.
    """
    prompts, targets, relations = [], [], []
    for fact in world.facts:
        for template in relation(fact.relation).phrasings(which):
            prompts.append(template.format(fact.subject))
            targets.append(fact.object)
            relations.append(fact.relation)
    hits = first_token_is_top1(model, tokenizer, prompts, targets, batch_size).tolist()
    by_relation: dict[str, list[bool]] = defaultdict(list)
    for name, hit in zip(relations, hits):
        by_relation[name].append(hit)
    return {
        "recall": sum(hits) / len(hits),
        "n_prompts": len(hits),
        "by_relation": {name: sum(v) / len(v) for name, v in sorted(by_relation.items())},
    }
