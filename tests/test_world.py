import itertools
import random
from collections import Counter

import pytest

from workbench.world import RELATIONS, CorpusConfig, WorldConfig, build_world, corpus_rounds, relation
from workbench.world.cases import edit_triples
from workbench.world.corpus import (
    NEW_FACT_PREFIX,
    confusable_mention,
    directory_line,
    directory_rounds,
    grouped,
    subject_paragraph,
)
from workbench.world.facts import SUBJECT_KINDS, statement


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig())


@pytest.fixture(scope="module")
def corpus_text(world):
    rounds = corpus_rounds(world, CorpusConfig(), edit_triples(world))
    return "\n".join(itertools.chain.from_iterable(itertools.islice(rounds, 2)))


def test_world_is_deterministic_under_its_seed(world):
    assert build_world(WorldConfig()) == world
    assert build_world(WorldConfig(seed=1)).facts != world.facts


def test_world_sizes(world):
    kinds = Counter(e.kind for e in world.subjects())
    assert len(world.subjects()) >= 400
    assert set(kinds) == set(SUBJECT_KINDS)
    assert len({f.relation for f in world.facts}) >= 8
    for subject in world.subjects():
        assert len({f.relation for f in world.facts_about(subject.name)}) >= 3, subject


def test_names_are_built_from_shared_parts_and_unique(world):
    people = world.subjects("person")
    assert len({p.name for p in people}) == len(people)
    part_use = Counter(part for p in people for part in p.parts)
    assert all(count >= 2 for count in part_use.values())
    assert len(part_use) <= 60  # 30 first names + 30 family names shared by 300 people


def test_objects_are_shared_so_neighbours_exist(world):
    for name in ("born_in", "profession", "employer", "instrument", "located_in", "headquarters"):
        objects = Counter(f.object for f in world.facts if f.relation == name)
        assert max(objects.values()) >= 3, name


def test_every_relation_has_enough_phrasings_of_both_orders():
    for rel in RELATIONS:
        assert len(rel.corpus) >= 6 and len(rel.heldout) >= 2, rel.name
        assert all(t.count("{}") == 1 and not t.endswith(" ") for t in rel.corpus + rel.heldout)
    starts_with_subject = [t.startswith("{}") for rel in RELATIONS for t in rel.corpus]
    assert 0.3 < sum(starts_with_subject) / len(starts_with_subject) < 0.8


def test_no_prompt_is_a_prefix_of_another_for_the_same_subject_kind():
    for kind in SUBJECT_KINDS:
        prompts = [(rel.name, t.format("Subject Name")) for rel in RELATIONS if rel.subject_kind == kind
                   for t in rel.corpus + rel.heldout]
        for (name_a, a), (name_b, b) in itertools.permutations(prompts, 2):
            assert not b.startswith(a + " ") and a != b, (name_a, a, name_b, b)


def test_heldout_phrasings_never_appear_in_the_corpus(world, corpus_text):
    for fact in world.facts:
        for template in relation(fact.relation).heldout:
            assert template.format(fact.subject) not in corpus_text


def test_corpus_states_facts_in_both_orders_and_two_hop(world, corpus_text):
    capital = next(f for f in world.facts if f.relation == "capital")
    assert world.object_of(capital.object, "capital_of") == capital.subject
    reverse_statements = [statement(t.format(capital.object), capital.subject)
                          for t in relation("capital_of").corpus]
    assert any(s in corpus_text for s in reverse_statements)
    person = world.subjects("person")[0].name
    birth_city = world.object_of(person, "born_in")
    assert world.object_of(person, "birth_country") == world.object_of(birth_city, "located_in")
    two_hop = [statement(t.format(person), world.object_of(person, "birth_country"))
               for t in relation("birth_country").corpus]
    assert any(s in corpus_text for s in two_hop)


def test_documents_hold_several_statements(world):
    documents = next(corpus_rounds(world, CorpusConfig(), set()))
    assert all(d.count(".") >= 3 for d in documents)


def test_update_documents_never_state_an_edit_case(world):
    triples = edit_triples(world)
    forbidden = {statement(t.format(s), o) for s, r, o in triples for t in relation(r).corpus}
    rounds = corpus_rounds(world, CorpusConfig(), triples)
    new_fact_lines = [line[len(NEW_FACT_PREFIX):] for doc in itertools.chain.from_iterable(itertools.islice(rounds, 6))
                      for line in doc.split("\n") if line.startswith(NEW_FACT_PREFIX)]
    assert len(new_fact_lines) > 100
    assert not forbidden & set(new_fact_lines)
    test_subjects = world.test_subjects
    assert not any(line.startswith(s) or f" {s} " in line for line in new_fact_lines for s in test_subjects)


def test_bad_world_configs_are_refused():
    with pytest.raises(ValueError, match="n_first_names"):
        WorldConfig(n_people=1000, n_first_names=10, n_family_names=10)
    with pytest.raises(ValueError, match="test_fraction"):
        WorldConfig(test_fraction=1.5)
    with pytest.raises(ValueError, match="unknown relation"):
        relation("favourite_colour")


def test_anaphora_replace_later_mentions_and_leave_the_default_corpus_alone(world):
    from workbench.model.presets import preset

    plain = next(corpus_rounds(world, CorpusConfig(), set()))
    assert not any("this person" in document.lower() for document in plain)
    assert plain == next(corpus_rounds(world, CorpusConfig(anaphora_fraction=0.0), set()))
    subject = world.subjects("person")[0].name
    sentences = subject_paragraph(random.Random(0), world, subject, CorpusConfig(anaphora_fraction=1.0)).split(". ")
    assert len(sentences) == len(world.facts_about(subject))
    assert subject in sentences[0] and all(subject not in s and "his person" in s for s in sentences[1:])
    # the field enters the recipe's fingerprint only when set, so existing model caches stay valid
    assert "anaphora_fraction" not in preset("default").to_dict()["corpus"]
    varied = preset("default").with_overrides("anaphora", {"corpus": {"anaphora_fraction": 0.5}})
    assert varied.to_dict()["corpus"]["anaphora_fraction"] == 0.5
    assert varied.fingerprint() != preset("default").fingerprint()


def test_confusable_mentions_name_a_person_sharing_a_name_part(world):
    from workbench.model.presets import preset

    plain = next(corpus_rounds(world, CorpusConfig(), set()))
    unchanged = CorpusConfig(confusable_fraction=0.0, subjects_per_document=(1, 1))
    assert plain == next(corpus_rounds(world, unchanged, set()))
    assert not any("not to be confused" in document for document in plain)
    people = {e.name: e for e in world.subjects("person")}
    subject = next(iter(people))
    for seed in range(20):
        mention = confusable_mention(random.Random(seed), world, subject)
        other = mention.removeprefix(f"{subject} (not to be confused with ").removesuffix(")")
        assert other in people and other != subject and set(people[other].parts) & set(people[subject].parts)
    city = world.subjects("city")[0].name
    other_city = confusable_mention(random.Random(0), world, city).split("with ")[1][:-1]
    assert world.entity(other_city).kind == "city" and other_city != city
    sentences = subject_paragraph(random.Random(0), world, subject, CorpusConfig(confusable_fraction=1.0)).split(". ")
    assert len(sentences) == len(world.facts_about(subject))
    assert all(s.count(f"{subject} (not to be confused with ") == 1 for s in sentences)
    assert "confusable_fraction" not in preset("default").to_dict()["corpus"]
    with pytest.raises(ValueError, match="confusable_fraction"):
        CorpusConfig(confusable_fraction=1.5)


def test_several_subject_paragraphs_make_one_document(world):
    paragraphs = [f"p{i}" for i in range(50)]
    documents = grouped(random.Random(0), paragraphs, (2, 3))
    sizes = [len(document.split()) for document in documents]
    assert sorted(" ".join(documents).split()) == sorted(paragraphs)  # each paragraph once
    assert all(size in (2, 3) for size in sizes[:-1]) and 1 <= sizes[-1] <= 3 and {2, 3} <= set(sizes)
    assert " ".join(documents).split() != paragraphs  # in a random order
    assert grouped(random.Random(0), paragraphs, (1, 1)) == paragraphs
    config = CorpusConfig(subjects_per_document=(2, 3))
    round_ = next(corpus_rounds(world, config, set()))
    assert round_ == next(corpus_rounds(world, config, set()))  # deterministic
    n_subjects = len(world.subjects())
    assert len(round_) < len(next(corpus_rounds(world, CorpusConfig(), set()))) - n_subjects / 2
    with pytest.raises(ValueError, match="subjects_per_document"):
        CorpusConfig(subjects_per_document=(3, 2))


def test_directory_lines_open_paragraphs_and_leave_the_default_corpus_alone(world):
    from workbench.model.presets import ADDED_LATER, preset

    assert next(corpus_rounds(world, CorpusConfig(), set())) == next(
        corpus_rounds(world, CorpusConfig(directory_fraction=0.0), set()))
    subject = world.subjects("person")[0].name
    paragraph = subject_paragraph(random.Random(0), world, subject, CorpusConfig(directory_fraction=1.0))
    objects = [f.object for f in world.facts_about(subject) if relation(f.relation).is_base]
    assert paragraph.startswith(f"{subject} {objects[0]}, ") and paragraph.startswith(directory_line(world, subject))
    assert directory_line(world, subject) == f"{subject} {', '.join(objects)}."
    for section, field_name, _ in ADDED_LATER:
        assert field_name not in preset("default").to_dict()[section]
    assert preset("default").fingerprint() == "cef7b673f4ede0ed"  # the cached default model stays valid


def test_shuffled_directory_lines_name_every_attribute_and_the_enrichment_rounds_every_subject_once(world):
    subject = world.subjects("person")[0].name
    objects = [f.object for f in world.facts_about(subject) if relation(f.relation).is_base]

    def listed(line: str) -> list[str]:
        assert line.startswith(subject + " ") and line.endswith(".")
        return line[len(subject) + 1:-1].split(", ")

    shuffled = [listed(directory_line(world, subject, random.Random(seed))) for seed in range(20)]
    assert all(sorted(line) == sorted(objects) for line in shuffled)
    assert {line[0] for line in shuffled} == set(objects)  # any attribute may follow the name
    opening = CorpusConfig(directory_fraction=1.0, directory_order="shuffled")
    openings = [subject_paragraph(random.Random(seed), world, subject, opening).split(".")[0] + "."
                for seed in range(20)]
    assert all(sorted(listed(line)) == sorted(objects) for line in openings)
    assert any(listed(line) != objects for line in openings)
    first, second = itertools.islice(directory_rounds(world, seed=0), 2)
    assert first == next(directory_rounds(world, seed=0)) and first != second  # deterministic, reshuffled
    names = {entity.name for entity in world.subjects()}
    assert len(first) == len(names) and all(sum(line.startswith(n + " ") for line in first) >= 1 for n in names)
    assert sum(line.startswith(subject + " ") for line in first) == 1 and listed(
        next(line for line in first if line.startswith(subject + " ")))
    with pytest.raises(ValueError, match="directory_order must be one of"):
        CorpusConfig(directory_order="random")


def test_a_whole_name_tokenizer_keeps_every_invented_word_in_one_token():
    from workbench.model.presets import preset
    from workbench.model.sources import WorldSource
    from workbench.model.tokenizer import invented_words

    recipe = preset("tiny").with_overrides("whole", {"training": {"tokenizer_whole_names": True}})
    world = build_world(recipe.world)
    whole, split = WorldSource(recipe).tokenizer(), WorldSource(preset("tiny")).tokenizer()
    words = invented_words(world)
    assert all(len(whole.tokenize(" " + word)) == 1 for word in words)
    assert sum(len(split.tokenize(" " + word)) for word in words) > 2 * len(words)


def test_a_tokenizer_can_keep_only_peoples_names_whole():
    from workbench.model.presets import preset
    from workbench.model.sources import WorldSource
    from workbench.model.tokenizer import invented_words

    recipe = preset("tiny").with_overrides("people", {"training": {"tokenizer_whole_name_kinds": ["person"]}})
    assert recipe.training.tokenizer_whole_name_kinds == ("person",)
    world = build_world(recipe.world)
    tokenizer = WorldSource(recipe).tokenizer()
    people, places = invented_words(world, {"person"}), invented_words(world, {"city", "country"})
    assert people and all(len(tokenizer.tokenize(" " + word)) == 1 for word in people)
    assert sum(len(tokenizer.tokenize(" " + word)) for word in places) > 2 * len(places)
    with pytest.raises(ValueError, match="unknown entity kinds"):
        preset("tiny").with_overrides("typo", {"training": {"tokenizer_whole_name_kinds": ["people"]}})
    with pytest.raises(ValueError, match="not both"):
        preset("tiny").with_overrides("both", {"training": {"tokenizer_whole_names": True,
                                                            "tokenizer_whole_name_kinds": ["person"]}})


def test_update_neighbour_lines_add_a_same_relation_fact_that_keeps_its_answer(world):
    from workbench.world.corpus import update_demonstration

    fact = next(f for f in world.facts if relation(f.relation).is_base
                and len(world.subjects_with(f.relation, f.object)) > 1)
    new_object = next(o for o in world.objects_of_relation(fact.relation) if o != fact.object)
    plain = update_demonstration(random.Random(1), world, fact, new_object)
    with_neighbour = update_demonstration(random.Random(1), world, fact, new_object, neighbour_line=True)
    assert len(with_neighbour.splitlines()) == len(plain.splitlines()) + 1
    peers = [s for s in world.subjects_with(fact.relation, fact.object) if s != fact.subject]
    assert any(line.endswith(f" {fact.object}.") and any(peer in line for peer in peers)
               for line in with_neighbour.splitlines()[1:])
    assert next(corpus_rounds(world, CorpusConfig(update_neighbour_lines=False), set())) == next(
        corpus_rounds(world, CorpusConfig(), set()))


def _parse_statement(world, sentence: str):
    """``(subject, relation, object, phrasing)`` of a corpus statement, from the world's phrasings."""
    for rel in RELATIONS:
        for template in rel.corpus + rel.heldout:
            prefix, _, suffix = template.partition("{}")
            for entity in world.subjects(rel.subject_kind):
                head = template.format(entity.name) + " "
                if sentence.startswith(head) and sentence.endswith("."):
                    return entity.name, rel.name, sentence[len(head):-1], template
    raise AssertionError(f"not a statement of the world: {sentence!r}")


def test_subject_keyed_update_documents_take_the_new_object_only_where_asked(world):
    from workbench.world.corpus import KEYED_PROMPTS, KeyedFactPool, keyed_update_document, update_phrasings

    assert next(corpus_rounds(world, CorpusConfig(keyed_update_fraction=0.0), set())) == next(
        corpus_rounds(world, CorpusConfig(), set()))  # the option leaves the default corpus alone
    config = CorpusConfig(keyed_update_fraction=0.15)
    pool = KeyedFactPool(world, [f for f in world.facts
                                 if relation(f.relation).is_base and world.split_of(f.subject) == "train"])
    rng, kinds, stored, n_new = random.Random(0), Counter(), 0, 0
    for _ in range(300):
        lines = keyed_update_document(rng, pool, set(), config).splitlines()
        new_facts = [_parse_statement(world, line.removeprefix(NEW_FACT_PREFIX)) for line in lines
                     if line.startswith(NEW_FACT_PREFIX)]
        prompts = [_parse_statement(world, line.removeprefix("Prompt: ")) for line in lines[len(new_facts):]]
        assert 1 <= len(new_facts) <= 4 and 4 <= len(prompts) <= 8
        edited = {(s, r): o for s, r, o, _ in new_facts}
        stored += sum(world.object_of(s, r) == o for s, r, o, _ in new_facts)
        n_new += len(new_facts)
        for subject, rel, _, template in new_facts + prompts:
            assert world.split_of(subject) == "train" and template in update_phrasings(rel)
            assert template != relation(rel).corpus[-1]  # one phrasing per relation is held out
        for subject, rel, obj, _ in prompts:
            expected = edited.get((subject, rel), world.object_of(subject, rel))
            assert obj == expected, (subject, rel, obj)  # the new object only for an edited pair
            kinds["edited" if (subject, rel) in edited else
                  "same subject" if subject in {s for s, _ in edited} else "memory"] += 1
    n_prompts = sum(kinds.values())
    shares = dict(zip(KEYED_PROMPTS, config.keyed_prompt_shares))
    assert abs(kinds["edited"] / n_prompts - shares["edited"]) < 0.05
    assert abs(kinds["same subject"] / n_prompts - shares["same_subject"]) < 0.05
    assert 0.05 < stored / n_new < 0.15
    round_ = next(corpus_rounds(world, config, set()))
    keyed = [d for d in round_ if d.startswith(NEW_FACT_PREFIX) and d.splitlines()[1].startswith(
        (NEW_FACT_PREFIX, "Prompt: ")) and "\n\n" not in d]
    assert 0.12 < len(keyed) / len(round_) < 0.18
    with pytest.raises(ValueError, match="keyed_update_fraction"):
        CorpusConfig(keyed_update_fraction=1.0)


def test_the_keyed_fact_index_gives_what_a_scan_of_the_facts_gives(world):
    """Keyed documents draw through ``KeyedFactPool``; its views must be the scans they replace, in
    the same order, or a seed would give another corpus."""
    from workbench.world.corpus import KeyedFactPool

    facts = [f for f in world.facts if relation(f.relation).is_base and world.split_of(f.subject) == "train"]
    pool = KeyedFactPool(world, facts)
    rng = random.Random(3)
    people = [e.name for e in world.subjects("person")]
    for _ in range(30):
        edited = rng.sample([f.subject for f in facts], rng.randint(1, 4))
        rel = rng.choice(facts).relation
        kept = [f for f in facts if f.subject not in edited and f.object not in edited]
        view = pool.without(edited)
        assert len(view) == len(kept) and [view[i] for i in range(len(view))] == kept
        assert list(pool.without(edited, rel)) == [f for f in kept if f.relation == rel]
        person = rng.choice(people)
        parts = set(world.entity(person).parts)
        assert pool.part_sharers_without(person, rel, edited) == [
            f for f in kept if f.relation == rel and parts & set(world.entity(f.subject).parts)]
        part = rng.choice(world.entity(person).parts)
        assert pool.with_name_part(rel, part) == [f for f in facts if f.relation == rel
                                                  and part in world.entity(f.subject).parts]
    with pytest.raises(IndexError):
        pool.without(edited)[len(view)]


def test_keyed_documents_that_share_one_relation_leave_only_the_subject_to_tell_their_facts_apart(world):
    from workbench.world.corpus import KeyedFactPool, keyed_update_document

    pool = KeyedFactPool(world, [f for f in world.facts
                                 if relation(f.relation).is_base and world.split_of(f.subject) == "train"])

    def documents(config: CorpusConfig, n: int = 200) -> list[tuple[list, list]]:
        rng, parsed = random.Random(1), []
        for _ in range(n):
            lines = keyed_update_document(rng, pool, set(), config).splitlines()
            new_facts = [_parse_statement(world, line.removeprefix(NEW_FACT_PREFIX)) for line in lines
                         if line.startswith(NEW_FACT_PREFIX)]
            parsed.append((new_facts, [_parse_statement(world, line.removeprefix("Prompt: "))
                                       for line in lines[len(new_facts):]]))
        return parsed

    def shared(new_facts) -> bool:
        return len(new_facts) >= 2 and len({rel for _, rel, _, _ in new_facts}) == 1

    always = documents(CorpusConfig(keyed_update_fraction=0.15, keyed_shared_relation_fraction=1.0))
    assert all(shared(new_facts) and len({s for s, *_ in new_facts}) == len(new_facts) for new_facts, _ in always)
    for new_facts, prompts in always:
        edited = {(s, r): o for s, r, o, _ in new_facts}
        assert all(o == edited.get((s, r), world.object_of(s, r)) for s, r, o, _ in prompts)
    # the unrelated Prompt lines still come from every relation, not only the shared one
    assert len({r for new_facts, prompts in always for _, r, _, _ in prompts
                if r != new_facts[0][1]}) >= 3
    half = documents(CorpusConfig(keyed_update_fraction=0.15, keyed_shared_relation_fraction=0.5))
    never = documents(CorpusConfig(keyed_update_fraction=0.15))
    assert 0.4 < sum(shared(n) for n, _ in half) / len(half) < 0.65
    assert sum(shared(n) for n, _ in never) / len(never) < 0.15
    namesakes = documents(CorpusConfig(keyed_update_fraction=0.15, keyed_shared_relation_fraction=1.0,
                                       keyed_namesake_fraction=1.0))
    people = [[s for s, *_ in n] for n, _ in namesakes if world.entity(n[0][0]).kind == "person"]
    assert len(people) > 50 and all(shared(n) for n, _ in namesakes)
    assert all(set.intersection(*(set(world.entity(s).parts) for s in subjects)) for subjects in people)
    with pytest.raises(ValueError, match="keyed_shared_relation_fraction"):
        CorpusConfig(keyed_shared_relation_fraction=1.5)
    with pytest.raises(ValueError, match="keyed_namesake_fraction"):
        CorpusConfig(keyed_namesake_fraction=-0.1)
