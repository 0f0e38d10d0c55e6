"""A summary of a loaded model: architecture, size and, for workbench models, fact recall."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from workbench.model.recall import fact_recall
from workbench.world import World


def parameter_count(hf_config) -> int:
    """Parameters of the architecture as Hugging Face defines it (tied weights once), counted on
    the meta device: the bridge adds split copies of some weights that are not the model's own."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config).num_parameters()


def model_info(bridge, world: World | None) -> dict:
    """Architecture facts of ``bridge``; ``recall_corpus`` / ``recall_heldout`` are the top-1
    recall of the object's first token on corpus and held-out phrasings (None without a world)."""
    cfg = bridge.cfg
    hf_config = bridge.original_model.config
    info = {
        "architecture": hf_config.model_type,
        "layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "d_mlp": cfg.d_mlp,
        "heads": cfg.n_heads,
        "context": cfg.n_ctx,
        "vocabulary": cfg.d_vocab,
        "parameters": parameter_count(hf_config),
        "recall_corpus": None,
        "recall_heldout": None,
    }
    if world is not None:
        corpus = fact_recall(bridge, bridge.tokenizer, world, "corpus")
        heldout = fact_recall(bridge, bridge.tokenizer, world, "heldout")
        info.update(recall_corpus=corpus["recall"], recall_heldout=heldout["recall"],
                    recall_corpus_by_relation=corpus["by_relation"],
                    recall_heldout_by_relation=heldout["by_relation"],
                    facts=len(world.facts), subjects=len(world.subjects()))
    return info
