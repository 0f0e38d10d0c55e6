"""Shared fixtures: the tiny preset model (trained once per cache) and small helpers."""

from __future__ import annotations

import pytest
import torch

from workbench.model.loading import load_model, load_world
from workbench.model.store import ensure_model


@pytest.fixture(scope="session")
def tiny_model_dir():
    return ensure_model("tiny", progress=False)


@pytest.fixture(scope="session")
def tiny_bridge(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_world(tiny_model_dir):
    return load_world(tiny_model_dir)


def installed_hook_count(bridge) -> int:
    """Forward and backward hooks currently installed on any hook point of ``bridge``."""
    return sum(len(hook_point._forward_hooks) + len(hook_point._backward_hooks)
               for hook_point in bridge.hook_dict.values())


def weights_snapshot(bridge) -> dict:
    """A copy of every parameter of the model under ``bridge``."""
    return {name: p.detach().clone() for name, p in bridge.original_model.named_parameters()}


def weights_equal(bridge, snapshot: dict) -> bool:
    """Whether every parameter is bit for bit what ``snapshot`` recorded."""
    return all(torch.equal(p, snapshot[name]) for name, p in bridge.original_model.named_parameters())


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_bridge):
    """A randomly initialised 2-layer Llama (``nn.Linear`` weights, gated MLP) with the tiny tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, max_position_embeddings=64, vocab_size=len(tiny_bridge.tokenizer))
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tiny_bridge.tokenizer.save_pretrained(directory)
    return load_model(directory)
