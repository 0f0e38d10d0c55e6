"""IKE: demonstration pool, kinds in proportion, context construction and truncation, evaluation."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.cases import Probe
from workbench.core.edit import EditRequest, commit
from workbench.editing.editor import Editor
from workbench.editing.export import export_edited_model
from workbench.editing.hparams import IkeHparams
from workbench.editing.ike import DemonstrationRetriever, demonstration_pool, kind_sequence
from workbench.editing.registry import tuned_hparams_file
from workbench.evaluation.runner import evaluate
from workbench.model.tokens import encode_prompt, encode_target, score_targets
from workbench.world.cases import edit_triples, load_edit_cases


def test_kinds_follow_the_papers_proportions_in_every_prefix():
    assert kind_sequence(8, (1, 3, 4)).count("copy") == 1
    assert [kind_sequence(8, (1, 3, 4)).count(kind) for kind in ("copy", "update", "retain")] == [1, 3, 4]
    assert [kind_sequence(32, (1, 3, 4)).count(kind) for kind in ("copy", "update", "retain")] == [4, 12, 16]
    sequence = kind_sequence(32, (1, 3, 4))
    for n in range(8, 33, 8):
        assert [sequence[:n].count(kind) for kind in ("copy", "update", "retain")] == [n // 8, 3 * n // 8, n // 2]
    assert kind_sequence(0, (1, 3, 4)) == []


def test_the_pool_comes_from_the_train_split_and_never_states_an_edit_case(tiny_world):
    pool = demonstration_pool(tiny_world, seed=0)
    assert pool and all(tiny_world.split_of(entry.subject) == "train" for entry in pool)
    excluded = edit_triples(tiny_world)
    for entry in pool:
        new_object = entry.new_fact.rsplit(" ", 1)[1].rstrip(".")
        true_object = tiny_world.object_of(entry.subject, entry.relation)
        assert new_object != true_object and (entry.subject, entry.relation, new_object) not in excluded
        assert entry.demonstration("copy") == f"New fact: {entry.new_fact}\nPrompt: {entry.new_fact}"
        assert entry.update != entry.new_fact and entry.update.endswith(f" {new_object}.")
        assert entry.subject not in entry.retain
    assert demonstration_pool(tiny_world, seed=0) == pool


@pytest.fixture(scope="module")
def cases(tiny_world):
    return load_edit_cases(None, tiny_world)


def test_the_context_holds_the_demonstrations_then_the_new_fact(tiny_bridge, tiny_world, cases):
    request = cases[0].request
    snapshot = weights_snapshot(tiny_bridge)
    edit = Editor(tiny_bridge, "ike", IkeHparams(k=1, reserve_tokens=32), tiny_world)(request)
    assert edit.deltas == () and edit.layers == ()
    new_fact = f"{request.prompt} {request.target_new}."
    assert edit.context.endswith(f"New fact: {new_fact}\nPrompt: ")
    blocks = edit.context.split("\n\n")
    assert len(blocks) == edit.details["demonstrations"] + 2 == 3 and edit.details["dropped_for_context"] == 0
    assert all(block.startswith("New fact: ") and "\nPrompt: " in block for block in blocks[:-1])
    assert blocks[-2] == f"New fact: {new_fact}\nPrompt: {new_fact}"  # the request as a copy demonstration
    without = Editor(tiny_bridge, "ike", IkeHparams(k=1, reserve_tokens=32, request_demonstration=False),
                     tiny_world)(request)
    assert without.context == "\n\n".join([*blocks[:-2], blocks[-1]])
    assert edit.details["context_tokens"] == len(encode_prompt(tiny_bridge.tokenizer, edit.context))
    assert edit.prompt_for(request.prompt) == edit.context + request.prompt
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0


def test_retrieval_never_uses_the_edited_subject(tiny_bridge, tiny_world):
    retriever = DemonstrationRetriever(tiny_bridge, tiny_world, IkeHparams())
    entry = retriever.pool[0]
    request = EditRequest(entry.new_fact.rsplit(" ", 1)[0], entry.subject, "Nowhere")
    nearest = retriever.nearest(request, len(retriever.pool))
    assert any(e.subject == entry.subject for e in retriever.pool)
    assert nearest and all(e.subject != entry.subject for e in nearest)
    drawn = DemonstrationRetriever(tiny_bridge, tiny_world, IkeHparams(retrieval="random")).chosen(request, 8)
    assert len(drawn) == 8 and all(e.subject != entry.subject for e in drawn)
    assert drawn != nearest[:8] and drawn == DemonstrationRetriever(
        tiny_bridge, tiny_world, IkeHparams(retrieval="random")).chosen(request, 8)  # seeded by the request


def test_a_long_context_drops_demonstrations_never_the_fact(tiny_bridge, tiny_world, cases):
    request = cases[0].request
    n_ctx = tiny_bridge.cfg.n_ctx
    edit = Editor(tiny_bridge, "ike", IkeHparams(k=40, reserve_tokens=48), tiny_world)(request)
    assert edit.details["dropped_for_context"] > 0
    assert edit.details["demonstrations"] + edit.details["dropped_for_context"] == 40
    assert edit.details["context_tokens"] <= n_ctx - 48
    assert edit.context.endswith(f"New fact: {request.prompt} {request.target_new}.\nPrompt: ")
    with pytest.raises(ValueError, match="new fact and its copy demonstration: .* leave no room for a prompt"):
        Editor(tiny_bridge, "ike", IkeHparams(k=2, reserve_tokens=n_ctx - 5), tiny_world)(request)


def test_ike_takes_no_layer_and_cannot_be_committed_or_exported(tiny_bridge, tiny_world, tiny_model_dir, cases,
                                                                 tmp_path):
    editor = Editor(tiny_bridge, "ike", IkeHparams(k=2), tiny_world)
    with pytest.raises(ValueError, match="no single layer"):
        editor(cases[0].request, layer=1)
    edit = editor(cases[0].request)
    with pytest.raises(ValueError, match="cannot be committed or exported"):
        commit(tiny_bridge, [edit])
    with pytest.raises(ValueError, match="cannot be committed or exported"):
        export_edited_model(tiny_model_dir, [edit], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_context_raises_the_new_target(tiny_bridge, tiny_world, cases):
    """The model learned update documents in training: with the context, the new target becomes
    more likely on the edit prompt for most cases."""
    editor = Editor(tiny_bridge, "ike", IkeHparams(k=2), tiny_world)
    chosen = cases[:10]
    edits = [editor(case.request) for case in chosen]
    targets = [case.request.target_new for case in chosen]
    plain = score_targets(tiny_bridge, tiny_bridge.tokenizer, [c.request.prompt for c in chosen], targets).log_prob
    edited = score_targets(tiny_bridge, tiny_bridge.tokenizer,
                           [e.prompt_for(c.request.prompt) for e, c in zip(edits, chosen)], targets).log_prob
    assert (edited > plain).float().mean() >= 0.6
    assert edited.mean() - plain.mean() > 1.0


def test_evaluation_measures_ike_in_context_and_records_its_details(tiny_bridge, tiny_world, cases):
    editor = Editor(tiny_bridge, "ike", IkeHparams(k=2), tiny_world)
    results, records = evaluate(tiny_bridge, cases[:3], lambda case: editor(case.request), progress=False,
                                fluency_tokens=0)
    assert results["n_cases"] == 3 and all(r["method"] == "ike" for r in records)
    assert all(r["details"]["demonstrations"] + r["details"]["dropped_for_context"] == 2 for r in records)
    case = cases[0]
    edit = editor(case.request)
    in_context = case.in_context(edit.context)
    assert in_context.request.prompt == edit.context + case.request.prompt
    assert all(p.prompt.startswith(edit.context) for p in in_context.paraphrases + in_context.neighbours)
    assert case.in_context("") is case


def test_hparams_are_checked_and_the_default_file_loads(tmp_path):
    with pytest.raises(ValueError, match="hyperparameter .proportions.: expected a list"):
        IkeHparams(proportions=(1, 3))
    with pytest.raises(ValueError, match="'knn' or 'random'"):
        IkeHparams(retrieval="bm25")
    assert IkeHparams.from_json(tuned_hparams_file("ike", "default")) == IkeHparams()
    (tmp_path / "bad.json").write_text('{"k": 4, "layer": 3}')
    with pytest.raises(ValueError, match="unknown IKE hyperparameters"):
        IkeHparams.from_json(tmp_path / "bad.json")


def test_a_case_with_long_prompts_gets_the_room_they_need(tiny_bridge, tiny_world, cases):
    """A paraphrase longer than ``reserve_tokens`` still fits after the context (CounterFact's
    paraphrases carry a sentence of generated text before the question)."""
    case = cases[0]
    long_prompt = " ".join([case.paraphrases[0].prompt] * 4)
    long_case = dataclasses.replace(case, paraphrases=(Probe(long_prompt, case.request.target_new),))
    editor = Editor(tiny_bridge, "ike", IkeHparams(k=8, reserve_tokens=8), tiny_world)
    room = (len(encode_prompt(tiny_bridge.tokenizer, long_prompt, prepend_bos=False))
            + max(len(encode_target(tiny_bridge.tokenizer, answer)) for answer in long_case.asked()[1]))
    edit = editor.edit_case(long_case)
    assert edit.hparams["reserve_tokens"] == room > 8
    assert edit.details["context_tokens"] + room <= tiny_bridge.cfg.n_ctx
    assert editor.edit_case(case).hparams["reserve_tokens"] < room  # the room follows the case
    results, _ = evaluate(tiny_bridge, [long_case], editor.edit_case, progress=False, fluency_tokens=0)
    assert results["paraphrase"]["n"] == 1
