"""ROME: the closed-form constraint, rank one, a model left untouched, and edits that take."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.editing.edit import EditRequest
from workbench.editing.hparams import RomeHparams
from workbench.editing.rome import compute_rome_edit
from workbench.model.tokens import score_targets, subject_token_span
from workbench.world import CorpusConfig, corpus_rounds, export_edit_cases

HPARAMS = RomeHparams.from_json(Path(__file__).parents[1] / "hparams" / "rome-tiny.json")


@pytest.fixture(scope="module")
def texts(tiny_world):
    return next(corpus_rounds(tiny_world, CorpusConfig(), set()))


@pytest.fixture(scope="module")
def cases(tiny_world):
    return [c for c in export_edit_cases(tiny_world, "test") if c["subject_kind"] == "person"][:5]


def _request(case):
    return EditRequest(case["prompt"], case["subject"], case["target_new"], case["ground_truth"])



def test_constraint_rank_one_and_untouched_model(tiny_bridge, texts, cases):
    before = weights_snapshot(tiny_bridge)
    edit = compute_rome_edit(tiny_bridge, _request(cases[0]), HPARAMS, texts)
    assert weights_equal(tiny_bridge, before)
    assert installed_hook_count(tiny_bridge) == 0
    (delta,) = edit.deltas
    assert torch.linalg.matrix_rank(delta.matrix()).item() == 1
    prompt, subject = cases[0]["prompt"], cases[0]["subject"]
    position = subject_token_span(tiny_bridge.tokenizer, prompt, subject)[1] - 1
    with edit.applied(tiny_bridge):
        _, cache = tiny_bridge.run_with_cache(prompt, names_filter=[delta.site.key_hook])
        key = cache[delta.site.key_hook][0, position]
    # the edited weight maps the request's own key to v*: W k + dW k = v*
    _, clean = tiny_bridge.run_with_cache(prompt, names_filter=[delta.site.output_hook])
    edited_output = clean[delta.site.output_hook][0, position] + delta.output_change(key)
    torch.testing.assert_close(edited_output, torch.tensor(edit.timings["target_value"]), atol=1e-4, rtol=1e-4)


def test_rome_edits_take_at_the_tiny_models_working_layer(tiny_bridge, texts, cases):
    successes = 0
    for case in cases:
        edit = compute_rome_edit(tiny_bridge, _request(case), HPARAMS, texts)
        with edit.applied(tiny_bridge):
            scores = score_targets(tiny_bridge, tiny_bridge.tokenizer, [case["prompt"]] * 2,
                                   [case["target_new"], case["ground_truth"]])
        successes += int(scores.log_prob[0] > scores.log_prob[1])
    assert successes >= 3  # 4 of 5 at layer 0 when written; later layers of this model fail (README)


def test_nan_during_optimisation_is_a_clear_error_and_loses_nothing(tiny_bridge, texts, cases):
    before = weights_snapshot(tiny_bridge)

    def poison(resid, hook):  # a numerical blow-up downstream of the edited layer
        return resid * float("nan")

    with pytest.raises(FloatingPointError, match="value optimisation produced nan"), \
            tiny_bridge.hooks(fwd_hooks=[("blocks.2.hook_resid_post", poison)]):
        compute_rome_edit(tiny_bridge, _request(cases[0]), HPARAMS, texts)
    assert weights_equal(tiny_bridge, before)
    assert installed_hook_count(tiny_bridge) == 0


def test_bad_hyperparameters_and_layers_are_refused(tmp_path, tiny_bridge, texts, cases):
    path = tmp_path / "rome.json"
    path.write_text(json.dumps({"layer": 1, "learning_rate": 0.1}))
    with pytest.raises(ValueError, match="unknown ROME hyperparameters"):
        RomeHparams.from_json(path)
    path.write_text(json.dumps({"v_steps": 3}))
    with pytest.raises(ValueError, match="need a 'layer'"):
        RomeHparams.from_json(path)
    with pytest.raises(ValueError, match="layer must be an integer"):
        compute_rome_edit(tiny_bridge, _request(cases[0]), RomeHparams(layer=99), texts)


def test_rome_on_a_linear_layout_meets_its_constraint_and_writes_nothing(tiny_llama, texts):
    """Llama keeps its MLP output weight as nn.Linear ([d_model, d_mlp]); the edit is the same."""
    request = EditRequest("Karo Velin was born in", "Karo Velin", "Dusmor")
    hparams = RomeHparams(layer=0, v_steps=5, n_prefixes=2, key_stats_tokens=600)  # layer 1 is the last
    before = weights_snapshot(tiny_llama)
    edit = compute_rome_edit(tiny_llama, request, hparams, texts)
    assert weights_equal(tiny_llama, before) and installed_hook_count(tiny_llama) == 0
    (delta,) = edit.deltas
    assert delta.site.orientation == "d_model d_mlp"
    assert torch.linalg.matrix_rank(delta.matrix()).item() == 1
    position = subject_token_span(tiny_llama.tokenizer, request.prompt, request.subject)[1] - 1
    _, cache = tiny_llama.run_with_cache(request.prompt, names_filter=[delta.site.key_hook, delta.site.output_hook])
    key, output = cache[delta.site.key_hook][0, position], cache[delta.site.output_hook][0, position]
    torch.testing.assert_close(output + delta.output_change(key), torch.tensor(edit.timings["target_value"]),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="does not reach the prediction of the target"):
        compute_rome_edit(tiny_llama, request, dataclasses.replace(hparams, layer=1), texts)
    assert weights_equal(tiny_llama, before) and installed_hook_count(tiny_llama) == 0
