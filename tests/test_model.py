"""The tiny preset model learns its world, and training is deterministic."""

import pytest
import torch

from workbench.model.info import model_info
from workbench.model.presets import preset
from workbench.model.sources import WorldSource
from workbench.model.training import learning_rate_at, token_blocks


def test_tiny_model_recalls_its_facts(tiny_bridge, tiny_world):
    info = model_info(tiny_bridge, tiny_world)
    assert info["architecture"] == "gpt2" and info["layers"] == preset("tiny").architecture.n_layer
    assert info["recall_corpus"] >= 0.95
    assert 0.0 <= info["recall_heldout"] <= 1.0
    assert set(info["recall_corpus_by_relation"]) == {f.relation for f in tiny_world.facts}


def test_training_report_matches_a_fresh_measurement(tiny_model_dir, tiny_bridge, tiny_world):
    import json

    report = json.loads((tiny_model_dir / "training_report.json").read_text())
    info = model_info(tiny_bridge, tiny_world)
    assert abs(report["recall_corpus"]["recall"] - info["recall_corpus"]) < 1e-9
    assert report["fingerprint"] == preset("tiny").fingerprint()


def test_training_tokens_are_deterministic(tiny_bridge):
    recipe = preset("tiny")
    source = WorldSource(recipe)
    first = token_blocks(source.rounds(), tiny_bridge.tokenizer, 4, recipe.architecture.n_ctx)
    assert first.shape == (4, recipe.architecture.n_ctx)
    assert torch.equal(first, token_blocks(source.rounds(), tiny_bridge.tokenizer, 4, recipe.architecture.n_ctx))
    assert (first == tiny_bridge.tokenizer.eos_token_id).any()  # documents are separated


def test_learning_rate_warms_up_then_decays():
    recipe = preset("default")
    cfg = recipe.training
    rates = [learning_rate_at(step, recipe) for step in range(cfg.steps)]
    peak = rates.index(max(rates))
    assert peak == cfg.warmup_steps - 1 and max(rates) == pytest.approx(cfg.learning_rate)
    assert all(a <= b for a, b in zip(rates[:peak], rates[1:peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))
    assert rates[-1] >= cfg.learning_rate * cfg.min_learning_rate_fraction


@pytest.mark.slow
def test_training_is_deterministic_under_its_seed(tmp_path):
    from safetensors.torch import load_file

    from workbench.model.training import train_model

    recipe = preset("tiny").with_overrides("tiny-short", {"training": {"steps": 4, "warmup_steps": 2}})
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        train_model(recipe, tmp_path / name, progress=False)
    first, second = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_training_from_scratch_lowers_the_loss_and_the_saved_model_reloads(tmp_path):
    """The training path, exercised in every test run now that the presets ship trained."""
    import math

    from workbench.model.loading import load_model, load_world
    from workbench.model.training import train_model

    recipe = preset("tiny").with_overrides("tiny-40", {"training": {"steps": 40, "warmup_steps": 5}})
    report = train_model(recipe, tmp_path, progress=False)
    curve = report["loss_curve"]  # means of 20 steps
    assert len(curve) == 2 and curve[1] < curve[0] - 1.0 and report["machine"]["threads"] >= 1
    bridge, world = load_model(tmp_path), load_world(tmp_path)
    assert len(world.facts) == len(WorldSource(recipe).world.facts)
    blocks = token_blocks(WorldSource(recipe).rounds(), bridge.tokenizer, 4, 64)
    with torch.no_grad():
        logits = bridge(blocks)
    reloaded_loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), blocks[:, 1:].flatten()).item()
    assert reloaded_loss < curve[0] - 1.0 < math.log(len(bridge.tokenizer))  # the trained weights, not new ones


def test_names_split_into_several_tokens_and_no_token_names_a_person():
    from collections import Counter

    recipe = preset("default")
    source = WorldSource(recipe)
    world, tokenizer = source.world, source.tokenizer()
    tokens = {s.name: tokenizer(" " + s.name)["input_ids"] for s in world.subjects()}
    assert sum(len(t) >= 2 for t in tokens.values()) / len(tokens) >= 0.9
    people = [p.name for p in world.subjects("person")]
    assert all(len(tokens[p]) >= 3 for p in people)
    use = Counter(t for p in people for t in set(tokens[p]))
    assert not [p for p in people if any(use[t] == 1 for t in tokens[p])]
