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
