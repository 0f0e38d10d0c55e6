"""Models of an edit-case file's true facts: the corpus, the build and its cache, and editing one."""

import json
from pathlib import Path

import pytest

from tests.conftest import installed_hook_count
from workbench.cli import main
from workbench.editing.editor import HPARAMS_DIR, Editor
from workbench.evaluation.cases import read_cases
from workbench.model import store
from workbench.model.loading import load_model, statistics_corpus
from workbench.model.presets import preset
from workbench.model.record_corpus import record_rounds, true_facts
from workbench.model.sources import CORPUS_FILE, FACTS_FILE, RecordSource
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


def test_a_model_of_the_files_facts_is_built_with_its_corpus_and_edited_with_it(cases_file, tmp_path):
    cases = read_cases(cases_file)
    source = RecordSource(SHORT, cases_file, cases, 4)
    report = store.build_into(SHORT, tmp_path / "model", progress=False, source=source, fingerprint="f" * 16)
    model_dir = tmp_path / "model"
    facts = json.loads((model_dir / FACTS_FILE).read_text())
    assert facts["n_records"] == 8 and facts["n_test"] == 4 and facts["format"] == "easyedit"
    assert len(facts["sha256"]) == 64 and not (model_dir / "world.json").exists()
    assert report["recall_edit_prompts"]["n_prompts"] == 8 and report["recall_neighbourhood"]["n_prompts"] == 8
    assert 0.0 <= report["recall_paraphrases"]["recall"] <= 1.0 and report["n_true_facts"] == 24
    assert store.is_complete(model_dir, "f" * 16, RecordSource.files)
    assert statistics_corpus(None, model_dir) == model_dir / CORPUS_FILE
    model = load_model(model_dir)
    edit = Editor(model, "rome", HPARAMS_DIR / "rome-tiny.json", None, model_dir / CORPUS_FILE)(cases[0].request, 0)
    assert edit.layers == (0,) and installed_hook_count(model) == 0
    with pytest.raises(ValueError, match="n_test must be between 1 and the 8 records"):
        RecordSource(SHORT, cases_file, cases, 9)


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
