import pytest

from workbench.world import WorldConfig, build_world, export_edit_cases, relation

EASYEDIT_FIELDS = ("prompt", "subject", "ground_truth", "target_new", "rephrase_prompt",
                   "locality_prompt", "locality_ground_truth")


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig())


@pytest.fixture(scope="module")
def cases(world):
    return export_edit_cases(world)


def test_splits_have_disjoint_subjects_and_enough_test_cases(world):
    train = export_edit_cases(world, "train")
    test = export_edit_cases(world, "test")
    assert not {c["subject"] for c in train} & {c["subject"] for c in test}
    assert len(test) >= 200 and len(train) > len(test)
    assert [c["case_id"] for c in test] == list(range(len(test)))
    assert export_edit_cases(world, "test") == test  # deterministic


def test_cases_are_a_superset_of_easyedit_counterfact(cases):
    for case in cases:
        for field in EASYEDIT_FIELDS:
            assert isinstance(case[field], str) and case[field], (field, case["case_id"])
        assert case["subject"] in case["prompt"] and case["subject"] in case["rephrase_prompt"]


def test_every_expected_answer_is_a_fact_of_the_world(world, cases):
    for case in cases:
        subject, rel = case["subject"], case["relation"]
        assert world.object_of(subject, rel) == case["ground_truth"]
        assert case["target_new"] != case["ground_truth"]
        assert case["target_new"] in world.objects_of_relation(rel)
        assert case["prompt"] in {t.format(subject) for t in relation(rel).corpus}
        for p in case["paraphrase_prompts"]:
            assert p["answer"] == case["target_new"] and p["prompt"] != case["prompt"]
            phrasings = relation(rel).heldout if p["held_out"] else relation(rel).corpus
            assert p["prompt"] in {t.format(subject) for t in phrasings}
        for n in case["neighborhood_prompts"]:
            assert n["subject"] != subject and world.object_of(n["subject"], rel) == n["answer"]
            assert n["answer"] != case["target_new"]
        for s in case["same_subject_prompts"]:
            assert s["relation"] != rel and world.object_of(subject, s["relation"]) == s["answer"]
        for r in case["reverse_prompts"]:
            assert r["answer"] == subject and relation(r["relation"]).inverse_of == rel
            assert r["prompt"].find(case["target_new"]) >= 0
        for p in case["portability_prompts"]:
            first, second = relation(p["relation"]).derived_from
            assert first == rel and world.object_of(case["target_new"], second) == p["answer"]


def test_reverse_and_portability_and_name_part_neighbours_exist(cases):
    by_relation = {}
    for case in cases:
        by_relation.setdefault(case["relation"], case)
    assert by_relation["capital"]["reverse_prompts"] and by_relation["founder"]["reverse_prompts"]
    assert by_relation["born_in"]["portability_prompts"] and by_relation["employer"]["portability_prompts"]
    assert not by_relation["profession"]["reverse_prompts"]
    kinds = {n["kind"] for c in cases for n in c["neighborhood_prompts"]}
    assert kinds == {"same_object", "same_relation", "shared_name_part"}


def test_unknown_split_is_refused(world):
    with pytest.raises(ValueError, match="split"):
        export_edit_cases(world, "validation")


def test_neighbours_are_distinct_other_subjects(cases):
    for case in cases:
        subjects = [n["subject"] for n in case["neighborhood_prompts"]]
        assert len(subjects) == len(set(subjects)) and case["subject"] not in subjects
