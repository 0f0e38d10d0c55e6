"""Reading edit cases: every format of the field into one typed form; clear errors for bad records."""

import json
from pathlib import Path

import pytest

from workbench.core.cases import parse_cases, read_cases
from workbench.world import WorldConfig, build_world, export_edit_cases

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_world_export_round_trips(tmp_path):
    exported = export_edit_cases(build_world(WorldConfig()), "test")
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(exported))
    cases = read_cases(path)
    assert len(cases) == len(exported) and {c.source for c in cases} == {"workbench"}
    first, record = cases[0], exported[0]
    assert first.request.target_new == record["target_new"] and first.request.ground_truth == record["ground_truth"]
    assert [p.prompt for p in first.paraphrases] == [p["prompt"] for p in record["paraphrase_prompts"]]
    assert len(first.neighbours) == len(record["neighborhood_prompts"])
    with_reverse = next(c for c, r in zip(cases, exported) if r["reverse_prompts"])
    assert all(p.answer == with_reverse.request.subject for p in with_reverse.reverse)


def test_rome_counterfact_records_are_read():
    rewrite = {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
               "target_new": {"str": "English"}, "target_true": {"str": "French"}}
    record = {"case_id": 7, "requested_rewrite": rewrite, "paraphrase_prompts": ["Danielle Darrieux spoke"],
              "neighborhood_prompts": ["Léon Blum's mother tongue is"]}
    (case,) = parse_cases([record])
    assert case.source == "rome" and case.request.prompt == "The mother tongue of Danielle Darrieux is"
    assert case.paraphrases[0].answer == "English" and case.neighbours[0].answer == "French"
    for template in ("In {} people {lang} speak", "{} and {} speak", "The tongue of Danielle Darrieux is"):
        bad = {**record, "requested_rewrite": {**rewrite, "prompt": template}}
        with pytest.raises(ValueError, match="record 0, field 'requested_rewrite.prompt': must hold one"):
            parse_cases([bad])


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present on this machine")
def test_the_shared_counterfact_and_zsre_files_are_read():
    counterfact = read_cases(SHARED / "counterfact" / "counterfact-dev-2k.json")
    assert len(counterfact) == 2000 and counterfact[0].source == "easyedit"
    assert counterfact[0].request.subject in counterfact[0].request.prompt
    with pytest.warns(UserWarning, match="left out 19 records"):
        zsre = read_cases(SHARED / "zsre" / "zsre-dev-1k.json")
    assert len(zsre) == 981 and zsre[0].source == "zsre" and zsre[0].neighbours[0].prompt.startswith("nq question")


@pytest.mark.parametrize("records,message", [
    ([{"prompt": "a b", "subject": "a", "ground_truth": "c", "target_new": "d", "locality_prompt": "x",
       "locality_ground_truth": "y"}], "unrecognised edit-case record"),
    ([{"prompt": "a b", "subject": "z", "ground_truth": "c", "target_new": "d", "rephrase_prompt": "a",
       "locality_prompt": "x", "locality_ground_truth": "y"}], "record 0: subject 'z' does not occur"),
    ([{"src": "q a", "alt": "d", "answers": "c", "rephrase": "r", "loc": "l", "loc_ans": "m", "subject": "a"}],
     "record 0, field 'answers'"),
    ([{"prompt": "a b", "subject": "a", "ground_truth": "c", "target_new": "d", "paraphrase_prompts": ["x"]}],
     "record 0, field 'paraphrase_prompts': entries must be objects"),
    ({"not": "a list"}, "expected a JSON list"),
])
def test_malformed_records_name_the_record_and_field(records, message):
    with pytest.raises(ValueError, match=message):
        parse_cases(records)


def test_missing_and_invalid_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_cases(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{broken")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_cases(tmp_path / "bad.json")


def test_unreadable_case_and_corpus_files_name_the_file(tmp_path):
    from workbench.editing.key_stats import statistics_texts

    binary = tmp_path / "cases.json"
    binary.write_bytes(b'[{"prompt": "\xff\xfe"}]')
    with pytest.raises(ValueError, match=f"cases file {binary} is not UTF-8 text"):
        read_cases(binary)
    with pytest.raises(ValueError, match=f"cases file {tmp_path} is a directory"):
        read_cases(tmp_path)
    with pytest.raises(ValueError, match=f"corpus file {tmp_path} is a directory"):
        statistics_texts(None, tmp_path)
    with pytest.raises(ValueError, match=f"corpus file {binary} is not UTF-8 text"):
        statistics_texts(None, binary)
