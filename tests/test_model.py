"""The tiny preset model learns its world, and training is deterministic."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from workbench.model.info import model_info
from workbench.model.presets import preset
from workbench.model.sources import WorldSource
from workbench.model.training import Stage, learning_rate_at, optimise, token_blocks, training_stages
from workbench.world import relation


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
    rates = [learning_rate_at(step, cfg.steps, cfg) for step in range(cfg.steps)]
    peak = rates.index(max(rates))
    assert peak == cfg.warmup_steps - 1 and max(rates) == pytest.approx(cfg.learning_rate)
    assert all(a <= b for a, b in zip(rates[:peak], rates[1:peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))
    assert rates[-1] >= cfg.learning_rate * cfg.min_learning_rate_fraction


def test_an_enrichment_stage_of_directory_lines_comes_before_the_corpus(tiny_bridge):
    recipe = preset("tiny").with_overrides("tiny-enriched", {"training": {"steps": 3, "enrichment_steps": 2}})
    source, tokenizer, batch = WorldSource(recipe), tiny_bridge.tokenizer, recipe.training.batch_size
    enrichment, corpus = training_stages(recipe, source, tokenizer)
    assert (enrichment.name, corpus.name) == ("enrichment", "corpus")
    assert enrichment.blocks.shape == (2 * batch, recipe.architecture.n_ctx) and corpus.blocks.shape[0] == 3 * batch
    assert torch.equal(corpus.blocks, token_blocks(source.rounds(), tokenizer, 3 * batch, recipe.architecture.n_ctx))
    documents = tokenizer.decode(enrichment.blocks.flatten()).split(tokenizer.eos_token)[1:-1]  # the last is cut
    objects = {entity.name: sorted(f.object for f in source.world.facts_about(entity.name)
                                   if relation(f.relation).is_base) for entity in source.world.subjects()}
    for document in documents:
        subject = next(name for name in objects if document.startswith(name + " "))
        assert sorted(document[len(subject) + 1:-1].split(", ")) == objects[subject]
    assert len(documents) > len(objects)  # several rounds: every subject's line, again and again



def test_the_corpus_stage_passes_over_its_blocks_as_often_as_asked(tiny_bridge):
    recipe = preset("tiny").with_overrides("tiny-passes", {"training": {"steps": 5, "corpus_passes": 2}})
    source, tokenizer, batch = WorldSource(recipe), tiny_bridge.tokenizer, recipe.training.batch_size
    (corpus,) = training_stages(recipe, source, tokenizer)
    half = (5 * batch + 1) // 2
    distinct = token_blocks(source.rounds(), tokenizer, half, recipe.architecture.n_ctx)
    assert corpus.blocks.shape[0] == 5 * batch
    assert torch.equal(corpus.blocks[:half], distinct)
    assert torch.equal(corpus.blocks[half:], distinct[:5 * batch - half])
    assert "corpus_passes" not in preset("tiny").to_dict()["training"]
    with pytest.raises(ValueError, match="corpus_passes must be at least 1, got 0"):  # when the recipe is made
        recipe.with_overrides("none", {"training": {"corpus_passes": 0}})

def _two_layer_model():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2))


def test_the_late_mlps_stand_still_while_slowed_and_learn_after():
    recipe = preset("tiny").with_overrides("tiny-slow", {"training": {
        "steps": 4, "warmup_steps": 1, "late_mlp_layers": 1, "late_mlp_lr_fraction": 0.0}})
    blocks = torch.randint(0, 50, (4 * recipe.training.batch_size, 16), generator=torch.Generator().manual_seed(0))
    for slow_steps, late_moves in ((4, False), (2, True)):
        model = _two_layer_model()
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        optimise(model, [Stage("corpus", blocks, slow_steps=slow_steps)], recipe, progress=False)
        moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        late = {name for name in before if name.startswith(("transformer.h.1.mlp.", "transformer.ln_f."))}
        assert late and (late <= moved if late_moves else not late & moved)
        assert {"transformer.h.0.mlp.c_fc.weight", "transformer.h.1.attn.c_attn.weight",
                "transformer.wte.weight"} <= moved
    too_many = recipe.with_overrides("tiny-slow", {"training": {"late_mlp_layers": 3}})
    with pytest.raises(ValueError, match="late_mlp_layers must be between 1 and the model's 2 layers, got 3"):
        optimise(_two_layer_model(), [Stage("corpus", blocks)], too_many, progress=False)


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
