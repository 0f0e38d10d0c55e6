"""Attention knockout and linear probes at the name's last token: the instruments of the specimen
measurements, checked against direct computations on the tiny model."""

import numpy as np
import pytest
import torch

from tests.conftest import installed_hook_count
from workbench.core.sites import attention_scores_hook, stream_hook
from workbench.model.tokens import encode_prompt, encode_target, subject_token_span
from workbench.tracing.knockout import attention_knockout, average_knockout, window_layers
from workbench.tracing.probe import attribute_probes, mean_accuracy_by_layer, name_states, probe_accuracy
from workbench.world.cases import export_edit_cases

PROMPT, SUBJECT = "Karo Lind was born in", "Karo Lind"


@pytest.fixture(scope="module")
def fact(tiny_world):
    case = next(c for c in export_edit_cases(tiny_world, "test") if c["subject_kind"] == "person")
    return {"prompt": case["prompt"], "subject": case["subject"], "answer": case["ground_truth"]}


def _one_layer_knockout(model, fact, layer, keys):
    """p(answer) with the last token's attention to ``keys`` blocked at ``layer`` alone, unbatched."""
    ids = torch.tensor([encode_prompt(model.tokenizer, fact["prompt"])])

    def block(scores, hook):
        scores = scores.clone()
        scores[:, :, -1, keys] = float("-inf")
        return scores

    answer = encode_target(model.tokenizer, fact["answer"])[0]
    with torch.no_grad():
        clean = model(ids)[0, -1].softmax(-1)[answer].item()
        with model.hooks(fwd_hooks=[(attention_scores_hook(layer), block)]):
            knocked = model(ids)[0, -1].softmax(-1)[answer].item()
    return (knocked - clean) / clean


def test_the_batched_knockout_equals_one_layer_at_a_time(tiny_bridge, fact):
    start, end = subject_token_span(tiny_bridge.tokenizer, fact["prompt"], fact["subject"])
    last = attention_knockout(tiny_bridge, fact["prompt"], fact["subject"], fact["answer"])
    whole = attention_knockout(tiny_bridge, fact["prompt"], fact["subject"], fact["answer"], blocked="subject")
    assert last.shape == whole.shape == (tiny_bridge.cfg.n_layers,) and installed_hook_count(tiny_bridge) == 0
    for layer in range(tiny_bridge.cfg.n_layers):
        assert last[layer] == pytest.approx(_one_layer_knockout(tiny_bridge, fact, layer, [end - 1]), abs=1e-5)
        assert whole[layer] == pytest.approx(_one_layer_knockout(tiny_bridge, fact, layer, list(range(start, end))),
                                             abs=1e-5)
    assert np.abs(whole).max() > 0
    averaged = average_knockout(tiny_bridge, [fact, fact], blocked="subject")
    assert np.allclose(averaged, whole)


def test_knockout_windows_and_bad_input(tiny_bridge, fact):
    assert list(window_layers(0, 3, 4)) == [0, 1] and list(window_layers(2, 3, 4)) == [1, 2, 3]
    assert list(window_layers(1, 2, 4)) == [1, 2] and list(window_layers(3, 1, 4)) == [3]
    everywhere = attention_knockout(tiny_bridge, fact["prompt"], fact["subject"], fact["answer"], window=8)
    assert np.allclose(everywhere, everywhere[0])  # every row blocks every layer
    blind = attention_knockout(tiny_bridge, fact["prompt"], fact["subject"], fact["answer"], window=8,
                               blocked="subject")
    assert blind[0] < -0.5  # a last token that never sees the subject loses most of the answer
    with pytest.raises(ValueError, match="blocked is one of"):
        attention_knockout(tiny_bridge, fact["prompt"], fact["subject"], fact["answer"], blocked="object")
    with pytest.raises(ValueError, match="does not occur in prompt"):
        attention_knockout(tiny_bridge, fact["prompt"], "Nobody Here", fact["answer"])
    with pytest.raises(ValueError, match="window must be at least 1"):
        attention_knockout(tiny_bridge, fact["prompt"], fact["subject"], fact["answer"], window=0)
    assert installed_hook_count(tiny_bridge) == 0


def test_name_states_are_the_states_at_the_names_last_token_of_a_prompt_that_starts_with_it(tiny_bridge):
    states = name_states(tiny_bridge, [SUBJECT])
    assert states.shape == (tiny_bridge.cfg.n_layers, 1, tiny_bridge.cfg.d_model)
    last = subject_token_span(tiny_bridge.tokenizer, PROMPT, SUBJECT)[1] - 1
    hooks = [stream_hook("resid", layer) for layer in range(tiny_bridge.cfg.n_layers)]
    with torch.no_grad():
        _, cache = tiny_bridge.run_with_cache(torch.tensor([encode_prompt(tiny_bridge.tokenizer, PROMPT)]),
                                              names_filter=hooks)
    for layer, hook in enumerate(hooks):
        assert torch.allclose(states[layer, 0], cache[hook][0, last], atol=1e-5)


def test_a_probe_decodes_what_is_linear_and_not_what_is_random():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=generator)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # four classes, linearly separable
    assert probe_accuracy(x[:200], y[:200], x[200:], y[200:], 4) > 0.85  # chance: about 0.25
    noise = torch.randint(0, 4, (300,), generator=generator)
    assert probe_accuracy(x[:200], noise[:200], x[200:], noise[200:], 4) < 0.45


def test_attribute_probes_report_every_layer_and_chance(tiny_bridge, tiny_world):
    results = attribute_probes(tiny_bridge, tiny_world, relations=["born_in"], steps=50)
    probe = results["born_in"]
    n_facts = sum(f.relation == "born_in" for f in tiny_world.facts)
    assert probe["n_train"] + probe["n_test"] == n_facts and probe["n_test"] > 0
    assert len(probe["accuracy"]) == tiny_bridge.cfg.n_layers and all(0 <= a <= 1 for a in probe["accuracy"])
    assert 0 < probe["chance"] < 1


def test_the_mean_probe_accuracy_is_taken_over_relations_layer_by_layer():
    probes = {"a": {"accuracy": [0.5, 1.0, 0.25]}, "b": {"accuracy": [0.0, 0.5, 0.75]}}
    assert mean_accuracy_by_layer(probes) == [0.25, 0.75, 0.5]
