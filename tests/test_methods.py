"""Editing methods behind one protocol: the registry drives the Editor, prepared state is made once
per model and weights (with no hook applied), and the shared target loss is the teacher-forced NLL."""

import dataclasses

import pytest
import torch

from tests.conftest import installed_hook_count
from workbench.core.edit import Edit, WeightDelta, commit
from workbench.editing import registry
from workbench.editing.editor import Editor
from workbench.editing.hparams import FinetuneHparams, IkeHparams, RomeHparams
from workbench.editing.key_stats import KeyStatistics
from workbench.editing.method import EditingMethod
from workbench.editing.target_loss import target_batch
from workbench.model.architecture import mlp_output_site
from workbench.model.handle import ModelHandle, ModelSource, open_model
from workbench.model.tokens import encode_prompt, encode_target
from workbench.world.cases import load_edit_cases


@pytest.fixture(scope="module")
def request_(tiny_world):
    return load_edit_cases(None, tiny_world)[0].request


@dataclasses.dataclass(frozen=True)
class ScaleHparams:
    layer: int | None = None
    scale: float = 1.0


class Scale(EditingMethod):
    """A toy method: adds ``scale`` times the target's unembedding, at the key's mean direction."""

    name = "scale"
    hparams_class = ScaleHparams
    takes_layer = True
    prepared_count = 0

    def prepare(self, model, hparams, resources):
        Scale.prepared_count += 1
        return {"hooks_seen": installed_hook_count(model)}

    def compute(self, model, request, hparams, prepared):
        site = mlp_output_site(model, hparams.layer)
        key = torch.ones(model.cfg.d_mlp) / model.cfg.d_mlp
        value = hparams.scale * model.W_U[:, encode_target(model.tokenizer, request.target_new)[0]].detach()
        return Edit(request, (WeightDelta.rank_one(site, key, value),), method=self.name, details=prepared)


def test_a_method_registered_by_name_is_driven_by_the_editor_alone(tiny_bridge, request_, monkeypatch):
    monkeypatch.setitem(registry.METHODS, "scale", Scale())
    Scale.prepared_count = 0
    editor = Editor(tiny_bridge, "scale", ScaleHparams(scale=2.0))
    with pytest.raises(ValueError, match="scale needs a layer"):
        editor(request_)  # a layer method with no layer in its hyperparameters
    first, second = editor(request_, layer=1), editor(request_, layer="1")
    assert first.layers == second.layers == (1,) and first.method == "scale"
    assert first.deltas[0].base  # stamped with the weight it was computed against
    assert Scale.prepared_count == 1  # prepared once for both edits
    with first.applied(tiny_bridge):
        assert Scale.prepared_count == 1 and editor(request_, layer=2).details == {"hooks_seen": 0}


def test_prepared_state_is_shared_by_a_handles_editors_and_remade_after_a_commit(tiny_bridge, tiny_world, request_,
                                                                                 tiny_model_dir):
    handle = ModelHandle(tiny_bridge, ModelSource.of("tiny", tiny_model_dir))
    rome = RomeHparams.from_json(registry.tuned_hparams_file("rome", "tiny"))
    first, second = Editor.for_model(handle, "rome", rome), Editor.for_model(handle, "rome", rome)
    statistics = first.prepared()
    assert isinstance(statistics, KeyStatistics) and second.prepared() is statistics
    assert Editor.for_model(handle, "ike", IkeHparams(k=2)).prepared() is not statistics
    fingerprint = handle.fingerprint()
    edit = Editor.for_model(handle, "ft-l", FinetuneHparams(layer=0, steps=2, norm_constraint=1e-3))(request_)
    committed = commit(tiny_bridge, [edit])
    try:
        assert first.prepared() is not statistics  # the weights were written: prepared again
        assert handle.fingerprint() != fingerprint
    finally:
        committed.revert()
    assert handle.fingerprint() == fingerprint


def test_a_model_the_workbench_did_not_train_gets_the_methods_defaults_and_no_layer(tiny_llama, request_):
    assert registry.method_hparams("rome", tuned=False) == RomeHparams()
    assert RomeHparams().layer is None and registry.method_hparams("rome").layer == 0  # the tuned file's
    editor = Editor(tiny_llama, "ft-l", tuned=False)
    with pytest.raises(ValueError, match="ft-l needs a layer for this model.*layer number or 'auto'"):
        editor(request_)
    edit = editor(request_, layer=1)
    assert edit.layers == (1,) and edit.method == "ft-l" and edit.deltas[0].matrix().abs().max() <= 5e-4 + 1e-9


def test_the_handle_reads_what_came_with_the_model(tiny_model_dir, tiny_world):
    handle = open_model(tiny_model_dir)
    assert handle.directory == tiny_model_dir and handle.trained_by_workbench
    assert handle.world.facts == tiny_world.facts and handle.facts is handle.world and handle.stats_corpus is None
    assert len(handle.fingerprint()) == 16 and handle.fingerprint() == handle.fingerprint()


def test_every_registered_method_declares_the_protocol():
    for name, method in registry.METHODS.items():
        assert method.name == name and dataclasses.is_dataclass(method.hparams_class)
        defaults = method.default_hparams()
        assert isinstance(defaults, method.hparams_class)
        names = {f.name for f in dataclasses.fields(defaults)}
        assert ("layer" in names) == method.takes_layer and set(method.main_hparams) <= names
    assert registry.LAYER_METHODS == ("rome", "memit", "alphaedit", "ft", "ft-l")
    assert registry.method_hparams("ft-l", tuned=False).norm_constraint == 5e-4
    assert registry.method_hparams("ft", tuned=False).norm_constraint is None
    with pytest.raises(ValueError, match="unknown editing method 'serac'"):
        registry.method_named("serac")


def test_the_target_loss_is_the_mean_teacher_forced_nll(tiny_bridge):
    """The batch's NLL equals -1/T sum_t log p(target_t | prompt, target_<t), each term from its own
    forward pass, with other rows in the batch changing nothing."""
    tokenizer = tiny_bridge.tokenizer
    prompt, target = "Karo Lind was born in", "the city of Vell"
    batch = target_batch(tokenizer, [prompt], target, "cpu", others=["an unrelated statement of other length ."])
    with torch.no_grad():
        nll = batch.nll(tiny_bridge(batch.tokens)).item()
        ids, target_ids, terms = encode_prompt(tokenizer, prompt), encode_target(tokenizer, target), []
        for token in target_ids:
            terms.append(tiny_bridge(torch.tensor([ids]))[0, -1].log_softmax(-1)[token].item())
            ids = ids + [token]
    assert len(target_ids) > 1 and batch.lengths[0] == len(ids) - 1
    assert nll == pytest.approx(-sum(terms) / len(terms), abs=1e-5)
