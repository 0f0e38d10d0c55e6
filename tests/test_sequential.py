"""Edits in sequence: merged edits act as the edits together, each edit is computed after the
earlier ones, the checkpoints measure what they say, and the commands write the curves."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.edit import applied_edits, merged_edit
from workbench.editing.editor import Editor
from workbench.evaluation.sequential import (
    RecallProbes,
    efficacies,
    recall_thresholds,
    sequential_evaluation,
    untouched_recall,
)
from workbench.model.recall import fact_recall
from workbench.world import facts_changed_by
from workbench.world.cases import load_edit_cases


@pytest.fixture(scope="module")
def cases(tiny_world):
    return [case for case in load_edit_cases(None, tiny_world) if case.request.ground_truth][:6]


@pytest.fixture(scope="module")
def rome_edits(tiny_bridge, tiny_world, cases):
    editor = Editor(tiny_bridge, "rome", facts=tiny_world)
    return [editor(case.request) for case in cases[:3]]


def test_a_merged_edit_acts_as_its_edits_applied_together(tiny_bridge, rome_edits, cases):
    tokens = torch.tensor([tiny_bridge.tokenizer.encode(cases[0].request.prompt)])
    merged = merged_edit(rome_edits)
    assert len(merged.deltas) == 1 and merged.details == {"n_edits": 3}
    assert merged.deltas[0].base == rome_edits[0].deltas[0].base is not None
    with applied_edits(tiny_bridge, rome_edits):
        together = tiny_bridge(tokens)
    with merged.applied(tiny_bridge):
        torch.testing.assert_close(tiny_bridge(tokens), together, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no edits"):
        merged_edit([])
    assert installed_hook_count(tiny_bridge) == 0


def test_the_facts_an_edit_makes_stale_are_the_fact_its_two_hop_and_its_reverse_facts(tiny_world):
    person = next(f.subject for f in tiny_world.facts if f.relation == "born_in")
    city = tiny_world.object_of(person, "born_in")
    changed = facts_changed_by(tiny_world, person, "born_in")
    assert changed == {(person, "born_in"), (person, "birth_country")}
    born_there = {(other, "birth_country") for other in tiny_world.subjects_with("born_in", city)}
    based_there = {(other, "hq_country") for other in tiny_world.subjects_with("headquarters", city)}
    assert born_there and based_there
    assert facts_changed_by(tiny_world, city, "located_in") == {(city, "located_in")} | born_there | based_there
    company = next(f.subject for f in tiny_world.facts if f.relation == "founder")
    founder = tiny_world.object_of(company, "founder")
    assert (founder, "founded") in facts_changed_by(tiny_world, company, "founder")


def test_recall_before_any_edit_is_the_worlds_recall(tiny_bridge, tiny_world):
    probes = RecallProbes.of(tiny_world)
    recall = untouched_recall(tiny_bridge, probes, set())
    for which in ("corpus", "heldout"):
        expected = fact_recall(tiny_bridge, tiny_bridge.tokenizer, tiny_world, which)
        assert recall[f"recall_{which}"]["mean"] == pytest.approx(expected["recall"])
        assert recall[f"recall_{which}"]["n"] == expected["n_prompts"]


def test_each_edit_is_computed_after_the_earlier_ones_and_the_checkpoints_measure_them(tiny_bridge, tiny_world,
                                                                                     cases):
    editor = Editor(tiny_bridge, "rome", facts=tiny_world)
    seen = []

    def edit(batch, earlier):
        seen.append([e.details.get("n_edits") for e in earlier])
        return editor.edit_case(batch[0], None, earlier)

    snapshot = weights_snapshot(tiny_bridge)
    rows = sequential_evaluation(tiny_bridge, cases[:5], edit, every=2, world=tiny_world, progress=False)
    assert seen == [[], [1], [2], [3], [4]]
    assert [row["edits"] for row in rows] == [0, 2, 4, 5]
    assert rows[0]["retention"]["n"] == 0 and rows[0]["recall_corpus"]["mean"] is not None
    assert [row["latest_efficacy"]["n"] for row in rows] == [0, 2, 2, 1]
    assert rows[-1]["retention"]["n"] == 5
    assert rows[-1]["neighborhood_score"]["n"] == sum(len(case.neighbours) for case in cases[:5])
    assert rows[-1]["untouched_facts"] < rows[0]["untouched_facts"] == len(tiny_world.facts)
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0
    # Retention at the end is the efficacy of the five edits applied together, measured again.
    replay = []
    for case in cases[:5]:
        replay.append(editor.edit_case(case, None, [merged_edit(replay)] if replay else []))
    with merged_edit(replay).applied(tiny_bridge):
        assert rows[-1]["retention"]["mean"] == pytest.approx(sum(efficacies(tiny_bridge, cases[:5])) / 5)


def test_bad_sequences_are_refused(tiny_bridge, tiny_world, cases):
    ike = Editor(tiny_bridge, "ike", facts=tiny_world)
    with pytest.raises(ValueError, match="in context"):
        sequential_evaluation(tiny_bridge, cases[:2], lambda batch, earlier: ike.edit_case(batch[0]), every=1,
                              progress=False)
    with pytest.raises(ValueError, match="multiple of the batch size"):
        sequential_evaluation(tiny_bridge, cases[:4], None, every=3, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="no edit cases"):
        sequential_evaluation(tiny_bridge, [], None, every=1, progress=False)
    assert installed_hook_count(tiny_bridge) == 0


def test_thresholds_are_the_first_checkpoint_below_a_fraction_of_the_start():
    def row(edits, mean):
        return {"edits": edits, "recall_corpus": {"mean": mean}}

    rows = [row(0, 0.8), row(10, 0.75), row(20, 0.7), row(30, 0.5), row(40, 0.3)]
    assert recall_thresholds(rows) == {"0.9": 20, "0.5": 40}
    assert recall_thresholds(rows[:3]) == {"0.9": 20, "0.5": None}


def test_the_commands_write_the_curves_and_the_thresholds(tmp_path, capsys, tiny_model_dir):
    from workbench.app.cli import main

    out = tmp_path / "sequence"
    run = ["compare", "--model", "tiny", "--methods", "memit,alphaedit", "--sequential", "4", "--every", "2",
           "--batch-size", "2", "--out", str(out)]
    assert main(run) == 0
    assert "recall < 0.9 of start at" in capsys.readouterr().out
    lines = [json.loads(line) for line in (out / "sequential.jsonl").read_text().splitlines()]
    assert [(line["method"], line["edits"]) for line in lines] == [
        (method, edits) for method in ("memit", "alphaedit") for edits in (0, 2, 4)]
    summary = json.loads((out / "sequential.json").read_text())
    assert summary["settings"]["batch_size"] == 2 and set(summary["methods"]) == {"memit", "alphaedit"}
    assert set(summary["methods"]["memit"]["thresholds"]["recall_corpus"]) == {"0.9", "0.5"}
    assert (out / "sequential.png").stat().st_size > 0 and (out / "sequential.svg").is_file()
    refusals = [(run, "already exists"),
                (["eval", "--model", "tiny", "--method", "rome", "--sequential", "2", "--workers", "2",
                  "--out", str(tmp_path / "workers")], "one process"),
                (["eval", "--model", "tiny", "--method", "rome", "--sequential", "9999",
                  "--out", str(tmp_path / "many")], "fewer than the 9999 edits")]
    for command, message in refusals:
        assert main(command) != 0
        assert message in capsys.readouterr().err
    assert not (tmp_path / "workers").exists() and not (tmp_path / "many").exists()


def test_a_method_without_a_batch_form_edits_a_batch_one_request_after_another(tiny_bridge, tiny_world, cases,
                                                                              rome_edits):
    editor = Editor(tiny_bridge, "rome", facts=tiny_world)
    batch = editor.edit_batch(cases[:2])
    assert batch.method == "rome" and batch.details["n_edits"] == 2 and len(batch.details["requests"]) == 2
    second = editor(cases[1].request, earlier=[rome_edits[0]])  # computed on the model with the first applied
    expected = rome_edits[0].deltas[0].matrix() + second.deltas[0].matrix()
    torch.testing.assert_close(batch.deltas[0].matrix(), expected, atol=1e-5, rtol=1e-4)
    assert batch.timings["total_s"] > 0
    with pytest.raises(ValueError, match="edits in context"):
        Editor(tiny_bridge, "ike", facts=tiny_world).edit_batch(cases[:2])
    assert installed_hook_count(tiny_bridge) == 0


def test_an_edit_that_blows_up_ends_the_sequence_with_the_state_before_it_measured(tiny_bridge, tiny_world, cases):
    editor = Editor(tiny_bridge, "ft-l", facts=tiny_world)

    def edit(batch, earlier):
        if earlier and earlier[0].details["n_edits"] == 3:
            raise FloatingPointError("fine-tuning produced a loss of nan at step 0")
        return editor.edit_case(batch[0], None, earlier)

    rows = sequential_evaluation(tiny_bridge, cases[:6], edit, every=2, world=tiny_world, progress=False)
    assert [row["edits"] for row in rows] == [0, 2, 3]
    assert rows[-1]["stopped"] == "edit 4 failed: fine-tuning produced a loss of nan at step 0"
    assert rows[-1]["retention"]["n"] == 3 and installed_hook_count(tiny_bridge) == 0
