"""The training corpus: documents of several statements, generated round by round.

Each round holds, in shuffled order:

- one paragraph per subject stating all of its facts (base, reverse and two-hop), each in a
  random corpus phrasing, in random order;
- mixed documents of statements about random subjects, so that prompts with unrelated text
  before the subject are in distribution;
- in-context update documents (train-split subjects only): ``New fact: <statement>`` followed
  by ``Prompt: <statement>`` lines answered according to it (paraphrases of the new fact,
  and true facts of the same subject and of other subjects), so the model learns to use a fact
  given in its context. Their new facts never coincide with an exported edit case.

Held-out phrasings never appear. Documents are plain strings; the tokenizer's end-of-text token
separates them when the corpus is tokenized.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from workbench.world.facts import Fact, World, statement
from workbench.world.relations import relation

NEW_FACT_PREFIX = "New fact: "
PROMPT_PREFIX = "Prompt: "


@dataclass(frozen=True)
class CorpusConfig:
    """How a round of the corpus is composed."""

    seed: int = 0
    mixed_documents_per_subject: float = 0.02
    statements_per_mixed_document: int = 6
    update_documents_per_subject: float = 0.03
    demonstrations_per_update_document: tuple[int, int] = (1, 4)
    anaphora_fraction: float = 0.0
    directory_fraction: float = 0.0
    update_neighbour_lines: bool = False


def random_statement(rng: random.Random, fact: Fact, avoid: str | None = None) -> str:
    """``fact`` stated in a random corpus phrasing (other than the statement ``avoid``)."""
    while True:
        template = rng.choice(relation(fact.relation).corpus)
        sentence = statement(template.format(fact.subject), fact.object)
        if sentence != avoid:
            return sentence


ANAPHORS = {"person": "this person", "city": "this city", "country": "this country", "company": "this company"}


def anaphoric(sentence_prompt: str, subject: str, anaphor: str) -> str:
    """``sentence_prompt`` with ``subject`` replaced by ``anaphor`` (capitalised at the start)."""
    replaced = sentence_prompt.replace(subject, anaphor)
    return replaced[0].upper() + replaced[1:]


def directory_line(world: World, subject: str) -> str:
    """``"<subject> <object>, <object>, ... ."``: the objects of the subject's base facts in world
    order, with no relation words, so the token right after the name already depends on who it is."""
    objects = [fact.object for fact in world.facts_about(subject) if relation(fact.relation).is_base]
    return f"{subject} {', '.join(objects)}."


def subject_paragraph(rng: random.Random, world: World, subject: str, anaphora_fraction: float = 0.0,
                      directory_fraction: float = 0.0) -> str:
    """Every fact about ``subject`` in random phrasings and order. After the first sentence, each
    sentence names the subject by an anaphor ("this person", "this city", ...) instead with
    probability ``anaphora_fraction``, so that a later sentence can only be completed by reading
    the subject's identity from its earlier mention. With probability ``directory_fraction`` the
    paragraph opens with the subject's ``directory_line``. (No random number is drawn for a
    fraction of 0, so the default corpus is unchanged by these options.)"""
    facts = world.facts_about(subject)
    rng.shuffle(facts)
    anaphor = ANAPHORS[world.entity(subject).kind]
    sentences = []
    if directory_fraction and rng.random() < directory_fraction:
        sentences.append(directory_line(world, subject))
    for index, fact in enumerate(facts):
        sentence = random_statement(rng, fact)
        if index and anaphora_fraction and rng.random() < anaphora_fraction:
            sentence = anaphoric(sentence, subject, anaphor)
        sentences.append(sentence)
    return " ".join(sentences)


def mixed_document(rng: random.Random, world: World, n_statements: int) -> str:
    return " ".join(random_statement(rng, rng.choice(world.facts)) for _ in range(n_statements))


def update_demonstration(rng: random.Random, world: World, fact: Fact, new_object: str,
                         neighbour_line: bool = False) -> str:
    """One ``New fact`` block: the counterfactual; a paraphrase of it; a true fact of the same subject
    that the change does not touch; a true fact of another subject. With ``neighbour_line``, also a
    true fact of another subject with the same relation (and the old object where one has it),
    which keeps its answer, and the ``Prompt`` lines in random order."""
    new_fact = Fact(fact.subject, fact.relation, new_object)
    stated = random_statement(rng, new_fact)
    lines = [PROMPT_PREFIX + random_statement(rng, new_fact, avoid=stated)]
    others = [f for f in world.facts_about(fact.subject)
              if f.relation != fact.relation and relation(f.relation).derived_from is None]
    if others:
        lines.append(PROMPT_PREFIX + random_statement(rng, rng.choice(others)))
    unrelated = rng.choice(world.facts)
    while unrelated.subject == fact.subject:
        unrelated = rng.choice(world.facts)
    lines.append(PROMPT_PREFIX + random_statement(rng, unrelated))
    if neighbour_line:
        peers = [s for s in world.subjects_with(fact.relation, fact.object) if s != fact.subject]
        if peers:
            lines.append(PROMPT_PREFIX + random_statement(rng, Fact(rng.choice(peers), fact.relation, fact.object)))
        rng.shuffle(lines)
    return "\n".join([NEW_FACT_PREFIX + stated, *lines])


def update_document(rng: random.Random, world: World, candidates: list[Fact],
                    excluded: set[tuple[str, str, str]], n_demonstrations: int, neighbour_lines: bool = False) -> str:
    """``n_demonstrations`` update blocks about train-split facts, avoiding ``excluded`` edits."""
    blocks = []
    while len(blocks) < n_demonstrations:
        fact = rng.choice(candidates)
        new_object = rng.choice(world.objects_of_relation(fact.relation))
        if new_object == fact.object or (fact.subject, fact.relation, new_object) in excluded:
            continue
        blocks.append(update_demonstration(rng, world, fact, new_object, neighbour_lines))
    return "\n\n".join(blocks)


def corpus_rounds(world: World, config: CorpusConfig,
                  excluded_edits: set[tuple[str, str, str]]) -> Iterator[list[str]]:
    """An endless stream of corpus rounds (lists of documents), deterministic under the seed.

    ``excluded_edits`` are ``(subject, relation, new_object)`` triples (the exported edit
    cases) that update documents must never state.
    """
    rng = random.Random(config.seed)
    subjects = [entity.name for entity in world.subjects()]
    update_candidates = [f for f in world.facts
                         if relation(f.relation).is_base and world.split_of(f.subject) == "train"]
    n_mixed = round(config.mixed_documents_per_subject * len(subjects))
    n_update = round(config.update_documents_per_subject * len(subjects))
    low, high = config.demonstrations_per_update_document
    while True:
        documents = [subject_paragraph(rng, world, s, config.anaphora_fraction, config.directory_fraction)
                     for s in subjects]
        documents += [mixed_document(rng, world, config.statements_per_mixed_document)
                      for _ in range(n_mixed)]
        documents += [update_document(rng, world, update_candidates, excluded_edits, rng.randint(low, high),
                                      config.update_neighbour_lines) for _ in range(n_update)]
        rng.shuffle(documents)
        yield documents
