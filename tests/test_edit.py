"""Edits through hooks and committed into the weights agree; reverting restores every bit."""

import dataclasses

import pytest
import torch

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.edit import Edit, EditRequest, WeightDelta, applied_edits, commit
from workbench.core.sites import site_module
from workbench.model.architecture import mlp_input_sites, mlp_output_site

TOKENS = torch.tensor([[0, 11, 12, 13, 14, 15, 16]])
REQUEST = EditRequest("Karo Velin was born in", "Karo Velin", "Dusmor")


def _random_edit(model, layer, rank_one=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    site = mlp_output_site(model, layer)
    d_mlp, d_model = model.cfg.d_mlp, model.cfg.d_model
    if rank_one:
        delta = WeightDelta.rank_one(site, torch.randn(d_mlp, generator=generator),
                                     torch.randn(d_model, generator=generator) * 0.1)
    else:
        delta = WeightDelta.dense(site, torch.randn(d_mlp, d_model, generator=generator) * 0.01)
    return Edit(REQUEST, (delta,), method="test")



@torch.no_grad()
def test_hooks_and_commit_give_the_same_logits_and_revert_is_exact(tiny_bridge):
    edits = [_random_edit(tiny_bridge, 1), _random_edit(tiny_bridge, 2, rank_one=False, seed=1)]
    before_weights = weights_snapshot(tiny_bridge)
    plain = tiny_bridge(TOKENS)
    with applied_edits(tiny_bridge, edits):
        hooked = tiny_bridge(TOKENS)
    assert weights_equal(tiny_bridge, before_weights)
    assert (hooked - plain).abs().max() > 1e-3  # the edit does something
    handle = commit(tiny_bridge, edits)
    try:
        committed = tiny_bridge(TOKENS)
    finally:
        handle.revert()
    torch.testing.assert_close(hooked, committed, atol=1e-5, rtol=1e-5)
    assert handle.reverted
    assert weights_equal(tiny_bridge, before_weights)
    assert torch.equal(tiny_bridge(TOKENS), plain)
    assert installed_hook_count(tiny_bridge) == 0


@torch.no_grad()
def test_edits_compose_and_a_single_edit_context_works(tiny_bridge):
    first, second = _random_edit(tiny_bridge, 1), _random_edit(tiny_bridge, 1, seed=2)
    summed = Edit(REQUEST, first.deltas + second.deltas, method="test")
    with applied_edits(tiny_bridge, [first, second]):
        together = tiny_bridge(TOKENS)
    with summed.applied(tiny_bridge):
        as_one = tiny_bridge(TOKENS)
    torch.testing.assert_close(together, as_one, atol=1e-6, rtol=1e-6)


def test_no_hook_is_left_after_an_error(tiny_bridge):
    with pytest.raises(RuntimeError, match="boom"), _random_edit(tiny_bridge, 0).applied(tiny_bridge):
        raise RuntimeError("boom")
    assert installed_hook_count(tiny_bridge) == 0


def test_commit_respects_each_orientation(tiny_bridge):
    edit = _random_edit(tiny_bridge, 3)
    weight = site_module(tiny_bridge, edit.deltas[0].site).weight
    before = weight.detach().clone()
    handle = commit(tiny_bridge, [edit])
    try:
        torch.testing.assert_close(weight - before, edit.deltas[0].matrix())  # GPT-2 Conv1D: [d_mlp, d_model]
    finally:
        handle.revert()
    assert torch.equal(weight, before)


@pytest.mark.parametrize("fields,message", [
    (("Karo Velin was born in", "Mira Oss", "Dusmor"), "does not occur in prompt"),
    (("Karo Velin was born in", "Karo Velin", " "), "target_new must be a non-empty string"),
    (("", "Karo Velin", "Dusmor"), "prompt must be a non-empty string"),
    (("Karo Velin was born in", "Karo Velin", b"Dus\xffmor".decode("utf-8", "surrogateescape")),
     "target_new .* is not valid text"),
])
def test_bad_requests_give_clear_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        EditRequest(*fields)
    with pytest.raises(ValueError, match="equals the current answer"):
        EditRequest("Karo Velin was born in", "Karo Velin", "Dusmor", ground_truth="Dusmor")


def _assert_hooks_and_commit_agree(model, edit: Edit) -> None:
    """The edit through hooks and committed give the same logits, it changes them, and the revert
    restores every weight."""
    snapshot = weights_snapshot(model)
    with edit.applied(model):
        hooked = model(TOKENS)
    handle = commit(model, [edit])
    committed = model(TOKENS)
    handle.revert()
    torch.testing.assert_close(hooked, committed, atol=1e-5, rtol=1e-5)
    assert (hooked - model(TOKENS)).abs().max() > 1e-4 and weights_equal(model, snapshot)


@torch.no_grad()
def test_hooks_and_commit_agree_for_a_linear_layout(tiny_llama):
    edit = _random_edit(tiny_llama, 1)
    assert edit.deltas[0].site.orientation == "out in"
    _assert_hooks_and_commit_agree(tiny_llama, edit)


@pytest.mark.parametrize("model_name,projections", [("tiny_bridge", ["c_fc"]),
                                                     ("tiny_llama", ["gate_proj", "up_proj"])])
@torch.no_grad()
def test_hooks_and_commit_agree_on_the_mlp_input_projections(model_name, projections, request):
    """An input projection's change (key space [d_model, d_mlp]) through hooks equals it committed,
    for a Conv1D (GPT-2) and for a gated MLP's gate and up projections (Llama)."""
    model = request.getfixturevalue(model_name)
    sites = mlp_input_sites(model, 1)
    assert [site.module.rsplit(".", 1)[1] for site in sites] == projections
    generator = torch.Generator().manual_seed(3)
    deltas = tuple(WeightDelta.dense(site, torch.randn(model.cfg.d_model, model.cfg.d_mlp, generator=generator) * 0.05)
                   for site in sites)
    _assert_hooks_and_commit_agree(model, Edit(REQUEST, deltas, method="test"))


def _another_tiny_model(tiny_model_dir, tmp_path):
    """A randomly initialised model of the tiny model's architecture and tokenizer (same shapes,
    other weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from workbench.model.loading import load_model

    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir)).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    return load_model(tmp_path)


def test_a_commit_checks_every_edit_before_it_writes_anything(tiny_bridge, tiny_model_dir, tmp_path):
    from workbench.editing.editor import Editor

    snapshot = weights_snapshot(tiny_bridge)
    good = Editor(tiny_bridge, "ft-l")(REQUEST, 0)
    assert good.deltas[0].base  # computed by an Editor: stamped with the weight it was computed against
    layer_5 = dataclasses.replace(good.deltas[0].site, layer=5, module="transformer.h.5.mlp.c_proj")
    beyond = Edit(REQUEST, (dataclasses.replace(good.deltas[0], site=layer_5),), method="test")
    wrong_shape = Edit(REQUEST, (WeightDelta(good.deltas[0].site, torch.ones(3, 1), torch.ones(1, 3)),), method="test")
    foreign = Editor(_another_tiny_model(tiny_model_dir, tmp_path), "ft-l")(REQUEST, 0)
    for bad, message in ((beyond, "no such module"), (wrong_shape, "does not fit"), (foreign, "other weights")):
        with pytest.raises(ValueError, match=message):
            commit(tiny_bridge, [good, bad])
        assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0
    handle = commit(tiny_bridge, [good, foreign], allow_other_base=True)  # the explicit override
    handle.revert()
    assert weights_equal(tiny_bridge, snapshot)


def test_a_failure_while_writing_restores_what_was_written(tiny_bridge, monkeypatch):
    from workbench.core import edit as edit_module

    snapshot, calls = weights_snapshot(tiny_bridge), []
    real_add = edit_module.add_to_weight

    def failing_add(weight, delta):
        calls.append(delta)
        if len(calls) == 2:
            raise RuntimeError("device lost")
        real_add(weight, delta)

    monkeypatch.setattr(edit_module, "add_to_weight", failing_add)
    with pytest.raises(RuntimeError, match="device lost"):
        commit(tiny_bridge, [_random_edit(tiny_bridge, 0), _random_edit(tiny_bridge, 1, seed=1)])
    assert len(calls) == 2 and weights_equal(tiny_bridge, snapshot)


def test_reverts_never_undo_another_commit(tiny_bridge):
    snapshot = weights_snapshot(tiny_bridge)
    first_edit, second_edit = _random_edit(tiny_bridge, 0), _random_edit(tiny_bridge, 0, seed=1)
    first = commit(tiny_bridge, [first_edit])
    after_first = weights_snapshot(tiny_bridge)
    second = commit(tiny_bridge, [second_edit])
    after_second = weights_snapshot(tiny_bridge)
    with pytest.raises(ValueError, match="revert the later commits first"):
        first.revert()
    assert weights_equal(tiny_bridge, after_second) and not first.reverted
    second.revert()
    assert weights_equal(tiny_bridge, after_first) and second.reverted
    first.revert()
    assert weights_equal(tiny_bridge, snapshot)
    twice = [commit(tiny_bridge, [first_edit]), commit(tiny_bridge, [first_edit])]
    with pytest.raises(ValueError, match="revert the later commits first"):
        twice[0].revert()
    for handle in reversed(twice):
        handle.revert()
    assert weights_equal(tiny_bridge, snapshot)
