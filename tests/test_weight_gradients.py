"""Editing methods optimise their own tensors through a frozen model: no gradient is computed for
any of the model's weights, none is left in ``.grad``, and each weight's ``requires_grad`` is
restored."""

from __future__ import annotations

import pytest
import torch

from workbench.core.edit import EditRequest
from workbench.editing.finetune import compute_finetune_edit
from workbench.editing.hparams import FinetuneHparams, MendHparams, RomeHparams
from workbench.editing.mend import compute_mend_edit, edit_gradients, edited_sites, new_network
from workbench.editing.rome import compute_rome_edit
from workbench.model.frozen import frozen_weights
from workbench.world import CorpusConfig, corpus_rounds

REQUEST_FIELDS = ("prompt", "subject", "target_new", "ground_truth")


@pytest.fixture()
def gradient_calls(tiny_bridge):
    """How many times autograd computed a gradient for any parameter of the model (counted by
    hooks on every parameter, removed afterwards)."""
    calls = []
    parameters = list(tiny_bridge.original_model.parameters())
    assert all(parameter.requires_grad for parameter in parameters)
    handles = [parameter.register_hook(lambda grad: calls.append(grad.shape)) for parameter in parameters]
    yield calls
    for handle in handles:
        handle.remove()
    assert all(parameter.requires_grad for parameter in parameters)  # the flags are restored
    assert all(parameter.grad is None for parameter in parameters)


@pytest.fixture(scope="module")
def request_(tiny_world):
    fact = next(f for f in tiny_world.facts if f.relation == "born_in")
    other = next(o for o in tiny_world.objects_of_relation("born_in") if o != fact.object)
    return EditRequest(f"{fact.subject} was born in", fact.subject, other, fact.object)


def _mend_network(model, hparams, request):
    network = new_network(model, hparams)
    for index, (keys, grads) in enumerate(edit_gradients(model, request, edited_sites(model, hparams))):
        network.observe(index, keys, grads)
    return network


def test_the_probe_counts_weight_gradients(tiny_bridge, gradient_calls):
    tiny_bridge(torch.tensor([[1, 2, 3]])).sum().backward()
    assert len(gradient_calls) > 0
    for parameter in tiny_bridge.original_model.parameters():
        parameter.grad = None
    gradient_calls.clear()


@pytest.mark.parametrize("method", ["rome", "ft", "ft-l", "mend"])
def test_no_weight_gradient_during_an_edit(method, tiny_bridge, tiny_world, request_, gradient_calls):
    if method == "rome":
        texts = next(corpus_rounds(tiny_world, CorpusConfig(), set()))
        edit = compute_rome_edit(tiny_bridge, request_, RomeHparams(layer=1, v_steps=3, key_stats_tokens=600), texts)
    elif method == "mend":
        hparams = MendHparams(layers=(-2, -1), rank=8)
        edit = compute_mend_edit(tiny_bridge, request_, hparams, _mend_network(tiny_bridge, hparams, request_))
    else:
        bound = 1e-3 if method == "ft-l" else None
        edit = compute_finetune_edit(tiny_bridge, request_, FinetuneHparams(layer=1, steps=3, norm_constraint=bound))
    assert edit.deltas and gradient_calls == []


def test_flags_are_restored_after_an_error(tiny_bridge):
    parameter = next(tiny_bridge.parameters())
    parameter.requires_grad_(False)  # a weight the user froze stays frozen
    try:
        with pytest.raises(RuntimeError, match="boom"), frozen_weights(tiny_bridge):
            assert not any(p.requires_grad for p in tiny_bridge.parameters())
            raise RuntimeError("boom")
        assert not parameter.requires_grad
        assert all(p.requires_grad for p in tiny_bridge.parameters() if p is not parameter)
    finally:
        parameter.requires_grad_(True)
