"""ROME: the closed-form constraint, rank one, a model left untouched, and edits that take."""

import dataclasses
import json
import math
import re

import pytest
import torch

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.edit import EditRequest
from workbench.editing.hparams import RomeHparams
from workbench.editing.registry import tuned_hparams_file
from workbench.editing.rome import (
    ValueObjective,
    compute_rome_edit,
    context_prefixes,
    keys_and_outputs,
    kl_from_original,
    value_batch,
    value_weight_decay,
)
from workbench.model.architecture import mlp_output_site
from workbench.model.tokens import encode_prompt, encode_target, score_targets, subject_token_span
from workbench.world import CorpusConfig, corpus_rounds, export_edit_cases

HPARAMS = RomeHparams.from_json(tuned_hparams_file("rome", "tiny"))


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


@pytest.mark.parametrize(("layer", "measured"), [(0, 10), (1, 9), pytest.param(2, 8, marks=pytest.mark.slow)])
def test_rome_edits_take_at_the_first_and_the_middle_layers(tiny_bridge, tiny_world, texts, layer, measured):
    """The first ten test cases of every kind; p(new) > p(true) on the edit prompt after the edit."""
    successes = 0
    for case in export_edit_cases(tiny_world, "test")[:10]:
        edit = compute_rome_edit(tiny_bridge, _request(case), dataclasses.replace(HPARAMS, layer=layer), texts)
        with edit.applied(tiny_bridge):
            scores = score_targets(tiny_bridge, tiny_bridge.tokenizer, [case["prompt"]] * 2,
                                   [case["target_new"], case["ground_truth"]])
        successes += int(scores.log_prob[0] > scores.log_prob[1])
    assert successes >= min(measured, 10) - 2  # ``measured`` of 10 when written


def test_kl_and_weight_decay_terms_match_a_hand_computation():
    generator = torch.Generator().manual_seed(0)
    edited = torch.randn(2, 5, generator=generator).log_softmax(-1)
    original = torch.randn(2, 5, generator=generator).log_softmax(-1)
    by_hand = sum(math.exp(edited[row, token]) * (edited[row, token] - original[row, token])
                  for row in range(2) for token in range(5)) / 2
    assert kl_from_original(edited, original).item() == pytest.approx(float(by_hand), rel=1e-5)
    assert kl_from_original(original, original).item() == pytest.approx(0.0, abs=1e-7)
    delta, output = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0, 2.0])
    assert value_weight_decay(delta, output, 0.5).item() == pytest.approx(0.5 * 5.0 / 9.0)


def test_the_value_loss_equals_one_computed_prompt_by_prompt(tiny_bridge, texts, cases):
    """The batched objective against each prompt run alone, with ``delta`` hooked in by hand."""
    request = _request(cases[0])
    hparams = dataclasses.replace(HPARAMS, layer=1, n_prefixes=2)
    prefixes = context_prefixes(texts, hparams.n_prefixes, hparams.prefix_words, hparams.seed)
    site = mlp_output_site(tiny_bridge, 1)
    original_output = keys_and_outputs(tiny_bridge, [request.prompt], request.subject, 1)[1][0]
    batch = value_batch(tiny_bridge.tokenizer, request, hparams, prefixes, "cpu")
    objective = ValueObjective(tiny_bridge, site, batch, hparams, original_output)
    delta = torch.randn(tiny_bridge.cfg.d_model, generator=torch.Generator().manual_seed(1))
    loss, terms = objective(delta)

    def alone(prompt, hooked):
        position = subject_token_span(tiny_bridge.tokenizer, prompt, request.subject)[1] - 1

        def add(output, hook):
            output = output.clone()
            output[0, position] += delta
            return output

        with tiny_bridge.hooks(fwd_hooks=[(site.output_hook, add)] if hooked else []):
            target = score_targets(tiny_bridge, tiny_bridge.tokenizer, [prompt], [request.target_new])
            logits = tiny_bridge(torch.tensor([encode_prompt(tiny_bridge.tokenizer, prompt)]))[0, -1]
        return target, logits.log_softmax(-1)

    n_target = len(encode_target(tiny_bridge.tokenizer, request.target_new))
    edit_prompts = [prefix + request.prompt for prefix in ["", *prefixes]]
    nll = -sum(alone(prompt, True)[0].log_prob[0].item() for prompt in edit_prompts) / (len(edit_prompts) * n_target)
    kl_prompt = hparams.kl_prompts[0].format(request.subject)
    edited, original = alone(kl_prompt, True)[1], alone(kl_prompt, False)[1]
    kl = (edited.exp() * (edited - original)).sum().item()
    decay = hparams.v_weight_decay * delta.norm().item() / original_output.norm().item() ** 2
    assert terms["nll"] == pytest.approx(nll, rel=1e-4)
    assert terms["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-6)
    assert terms["decay"] == pytest.approx(decay, rel=1e-5)
    assert loss.item() == pytest.approx(nll + hparams.kl_factor * kl + decay, rel=1e-4)
    through_bridge = ValueObjective(tiny_bridge, site, batch, hparams, original_output, through_bridge=True)
    assert objective.plain is not None and through_bridge.plain is None
    assert through_bridge(delta)[0].item() == pytest.approx(loss.item(), rel=1e-4)


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
    assert delta.site.orientation == "out in"
    assert torch.linalg.matrix_rank(delta.matrix()).item() == 1
    position = subject_token_span(tiny_llama.tokenizer, request.prompt, request.subject)[1] - 1
    _, cache = tiny_llama.run_with_cache(request.prompt, names_filter=[delta.site.key_hook, delta.site.output_hook])
    key, output = cache[delta.site.key_hook][0, position], cache[delta.site.output_hook][0, position]
    torch.testing.assert_close(output + delta.output_change(key), torch.tensor(edit.timings["target_value"]),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="does not reach the prediction of the target"):
        compute_rome_edit(tiny_llama, request, dataclasses.replace(hparams, layer=1), texts)
    assert weights_equal(tiny_llama, before) and installed_hook_count(tiny_llama) == 0


@pytest.mark.parametrize("content,message", [
    ('{"layer": 0, "clamp_norm_factor": -4}', "'clamp_norm_factor': must be > 0, got -4"),
    ('{"layer": 0, "v_steps": 0}', "'v_steps': must be >= 1, got 0"),
    ('{"layer": 0, "v_steps": "40"}', "'v_steps': expected int, got '40'"),
    ('{"layer": 0, "v_steps": 2.5}', "'v_steps': expected int, got 2.5"),
    ('{"layer": true}', "'layer': expected int, got True"),
    ('{"layer": 0, "v_weight_decay": NaN}', "'v_weight_decay': expected a finite float, got nan"),
    ('{"layer": 0, "key_stats_tokens": 0}', "'key_stats_tokens': must be >= 1, got 0"),
    ('{"layer": 0, "kl_prompts": ["{} is", 3]}', "'kl_prompts': expected str, got 3"),
    ("null", "expected a JSON object of ROME hyperparameters, got null"),
    ("{not json", "not valid JSON"),
])
def test_hyperparameter_files_are_typed_and_range_checked_naming_file_and_field(tmp_path, content, message):
    path = tmp_path / "rome.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: .*{re.escape(message)}"):
        RomeHparams.from_json(path)
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}: cannot read it"):
        RomeHparams.from_json(tmp_path)  # a directory


def test_fine_tuning_bounds_refuse_a_zero_constraint():
    from workbench.editing.hparams import FinetuneHparams

    with pytest.raises(ValueError, match="'norm_constraint': must be > 0, got 0"):
        FinetuneHparams(layer=0, norm_constraint=0)
    assert FinetuneHparams(layer=0, norm_constraint=None).norm_constraint is None
