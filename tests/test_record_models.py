"""Models of an edit-case file's true facts: the corpus, the build and its cache, and editing one."""

import itertools
import json
from pathlib import Path

import pytest

from tests.conftest import installed_hook_count
from workbench.app.cli import main
from workbench.core.cases import read_cases
from workbench.editing.editor import Editor
from workbench.editing.hparams import IkeHparams
from workbench.editing.ike import demonstration_pool
from workbench.editing.mend_training import training_edits
from workbench.editing.registry import tuned_hparams_file
from workbench.model import store
from workbench.model.handle import ModelSource, open_model
from workbench.model.presets import preset
from workbench.model.record_corpus import record_rounds, true_facts
from workbench.model.sources import CORPUS_FILE, FACTS_FILE, RecordSource, TrainRecords
from workbench.model.training import training_stages
from workbench.world import CorpusConfig

COUNTERFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "counterfact" / "counterfact-dev-2k.json"
SHORT = preset("tiny").with_overrides("tiny-short", {"training": {"steps": 6, "warmup_steps": 2}})


def easyedit_record(i: int) -> dict:
    return {"case_id": i, "prompt": f"Person{i} plays the", "subject": f"Person{i}", "ground_truth": f"lute{i % 3}",
            "target_new": f"drum{i % 3}", "rephrase_prompt": f"Person{i} is a player of the",
            "locality_prompt": f"Other{i} plays the", "locality_ground_truth": f"lute{i % 3}"}


@pytest.fixture
def cases_file(tmp_path):
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([easyedit_record(i) for i in range(8)]))
    return path


def test_a_round_states_every_true_fact_and_updates_only_train_records(cases_file):
    cases = read_cases(cases_file)
    config = CorpusConfig(update_documents_per_subject=1.0)
    first = next(record_rounds(cases, 4, config))
    assert first == next(record_rounds(cases, 4, config))  # deterministic under the seed
    text = "\n".join(first)
    for case in cases:
        assert true_facts(case) == [(case.request.prompt, case.request.ground_truth),
                                    (case.paraphrases[0].prompt, case.request.ground_truth),
                                    (case.neighbours[0].prompt, case.neighbours[0].answer)]
        assert all(f"{prompt} {answer}." in text for prompt, answer in true_facts(case))
    updates = [line for document in first for line in document.split("\n") if line.startswith("New fact: ")]
    assert updates and all(any(line == f"New fact: {c.request.prompt} {c.request.target_new}." for c in cases[4:])
                           for line in updates)  # the evaluated records' counterfactuals never appear


@pytest.fixture
def records_model(cases_file, tmp_path):
    """A model built (6 steps) on the 8 records of ``cases_file``, the first 4 being the test records."""
    source = RecordSource(SHORT, cases_file, read_cases(cases_file), 4)
    report = store.build_into(SHORT, tmp_path / "model", progress=False, source=source, fingerprint="f" * 16)
    return tmp_path / "model", report


def test_a_model_of_the_files_facts_is_built_with_its_corpus_and_edited_with_it(cases_file, records_model):
    cases = read_cases(cases_file)
    model_dir, report = records_model
    facts = json.loads((model_dir / FACTS_FILE).read_text())
    assert facts["n_records"] == 8 and facts["n_test"] == 4 and facts["format"] == "easyedit"
    assert len(facts["sha256"]) == 64 and not (model_dir / "world.json").exists()
    assert report["recall_edit_prompts"]["n_prompts"] == 8 and report["recall_neighbourhood"]["n_prompts"] == 8
    assert 0.0 <= report["recall_paraphrases"]["recall"] <= 1.0 and report["n_true_facts"] == 24
    assert store.is_complete(model_dir, "f" * 16, RecordSource.files)
    handle = open_model(model_dir)
    assert handle.stats_corpus == model_dir / CORPUS_FILE and handle.world is None and handle.trained_by_workbench
    edit = Editor.for_model(handle, "rome", tuned_hparams_file("rome", "tiny"))(cases[0].request, 0)
    assert edit.layers == (0,) and installed_hook_count(handle.bridge) == 0
    with pytest.raises(ValueError, match="n_test must be between 1 and the 8 records"):
        RecordSource(SHORT, cases_file, cases, 9)
    enriched = SHORT.with_overrides("short-enriched", {"training": {"enrichment_steps": 2}})
    with pytest.raises(ValueError, match="an enrichment stage reads directory lines of a workbench world"):
        training_stages(enriched, RecordSource(enriched, cases_file, cases, 4), tokenizer=None)


def test_the_train_records_are_read_when_used_and_only_from_the_file_the_model_learned(
        cases_file, records_model, tiny_model_dir, tiny_world):
    model_dir, _ = records_model
    facts = ModelSource.of(str(model_dir), model_dir).facts
    assert isinstance(facts, TrainRecords) and facts._cases is None  # nothing read yet
    assert [case.request for case in facts] == [case.request for case in read_cases(cases_file)[4:]]
    tiny = ModelSource.of("tiny", tiny_model_dir)
    assert tiny.facts is tiny.world and tiny.world.facts == tiny_world.facts and tiny.stats_corpus is None
    cases_file.write_text(json.dumps([easyedit_record(i) for i in range(9)]))
    with pytest.raises(ValueError, match="has changed since"):
        len(TrainRecords(model_dir))
    cases_file.unlink()
    with pytest.raises(ValueError, match="which is not there any more"):
        TrainRecords(model_dir)[0]


def test_mend_training_edits_come_from_the_train_records(cases_file):
    train = read_cases(cases_file)[4:]
    edits = list(itertools.islice(training_edits(train, seed=0), 40))
    assert edits == list(itertools.islice(training_edits(train, seed=0), 40))  # seeded
    by_request = {case.request: case for case in train}
    statements = {f"{prompt} {answer}." for case in train for prompt, answer in true_facts(case)}
    for edit in edits:
        case = by_request[edit.request]
        assert edit.paraphrase == case.paraphrases[0].prompt
        assert edit.neighbour == f"{case.neighbours[0].prompt} {case.neighbours[0].answer}."
        assert edit.unrelated in statements and case.request.subject not in edit.unrelated
    assert {edit.request for edit in edits} == {case.request for case in train[:2]}  # two held out
    held_out = list(itertools.islice(training_edits(train, seed=0, part="validation"), 20))
    assert {edit.request for edit in held_out} == {case.request for case in train[2:]}
    with pytest.raises(ValueError, match="four or more train records"):
        next(training_edits(train[:3], seed=0))


def test_ike_demonstrates_with_the_train_records_counterfactuals(cases_file, records_model):
    cases = read_cases(cases_file)
    train = cases[4:]
    pool = demonstration_pool(train, seed=0)
    assert [entry.new_fact for entry in pool] == [f"{c.request.prompt} {c.request.target_new}." for c in train]
    assert [entry.update for entry in pool] == [f"{c.paraphrases[0].prompt} {c.request.target_new}." for c in train]
    assert [entry.retain for entry in pool] == [f"{c.neighbours[0].prompt} {c.neighbours[0].answer}." for c in train]
    model_dir, _ = records_model
    hparams = IkeHparams(k=2, reserve_tokens=8, request_demonstration=False)  # only the pool's demonstrations
    edit = Editor.for_model(open_model(model_dir), "ike", hparams)(cases[0].request)
    blocks = edit.context.split("\n\n")
    request = cases[0].request
    assert edit.details["dropped_for_context"] == 0 and len(blocks) == 3
    assert blocks[-1] == f"New fact: {request.prompt} {request.target_new}.\nPrompt: "
    assert all(block.split("\n")[0] in {f"New fact: {entry.new_fact}" for entry in pool} for block in blocks[:-1])


def test_mend_trains_from_the_command_line_on_a_records_model(records_model, tmp_path):
    model_dir, _ = records_model
    hparams = tmp_path / "mend.json"
    hparams.write_text(json.dumps({"layers": [-1], "rank": 8, "train_steps": 4, "batch_size": 2}))
    out = tmp_path / "editor"
    assert main(["mend", "train", "--model", str(model_dir), "--hparams", str(hparams), "--out", str(out)]) == 0
    report = json.loads((out / "mend.json").read_text())["training"]
    assert report["edits_seen"] == 8 and report["trained_on"] == "4 train records"


def test_the_cache_is_keyed_by_the_files_content(cases_file, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    built = []

    def fake_train_model(recipe, out_dir, progress=True, source=None):
        built.append(out_dir)
        for name in (*store.BASE_FILES, *source.files):
            if name != store.MANIFEST_FILE:
                (out_dir / name).write_text(json.dumps({"train_seconds": 0, "tokens_seen": 0}))
        return {}

    monkeypatch.setattr(store, "train_model", fake_train_model)
    first = store.ensure_records_model(cases_file, preset_name="tiny")
    assert store.ensure_records_model(cases_file, preset_name="tiny") == first and len(built) == 1
    cases_file.write_text(json.dumps([easyedit_record(i) for i in range(10)]))
    assert store.ensure_records_model(cases_file, preset_name="tiny") != first and len(built) == 2
    assert main(["model", "build", "--preset", "tiny", "--facts", str(cases_file)]) == 0
    assert len(built) == 2  # the command found the cached build


@pytest.mark.skipif(not COUNTERFACT.is_file(), reason="../shared/data is not present on this machine")
def test_counterfact_records_give_three_true_facts_each():
    cases = read_cases(COUNTERFACT)
    assert len(cases) == 2000 and cases[0].source == "easyedit"
    assert all(len(true_facts(case)) == 3 for case in cases)
