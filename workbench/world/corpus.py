"""The training corpus: documents of several statements, generated round by round.

Each round holds, in shuffled order:

- one paragraph per subject stating all of its facts (base, reverse and two-hop), each in a
  random corpus phrasing, in random order; optionally (``subjects_per_document``) several
  subjects' paragraphs make one document, and (``confusable_fraction``) a sentence names its
  subject as "X (not to be confused with Y)", Y a subject that shares a name part with X where
  one does, so the relation words come several tokens after the name and after another name;
- mixed documents of statements about random subjects, so that prompts with unrelated text
  before the subject are in distribution;
- in-context update documents (train-split subjects only): ``New fact: <statement>`` followed
  by ``Prompt: <statement>`` lines answered according to it (paraphrases of the new fact,
  and true facts of the same subject and of other subjects), so the model learns to use a fact
  given in its context. Their new facts never coincide with an exported edit case.
- optionally (``keyed_update_fraction``), subject-keyed update documents: several ``New fact``
  lines, then ``Prompt`` lines of which only those asking an edited subject and relation take
  the new object; the same subjects' other relations, other subjects with an edited relation
  (some sharing a name part: hard negatives) and unrelated facts are answered from memory.
  Optionally (``keyed_shared_relation_fraction``) a document's new facts all share one relation,
  so that the relation alone cannot tell which of them a prompt asks, and
  (``keyed_namesake_fraction``) some of those are about people who share a name part. They are
  about train-split subjects only, and never use the last corpus phrasing of a relation
  (``update_phrasings``), so an in-context edit can be asked in a phrasing no update used.

A recipe may also begin with an enrichment stage (``directory_rounds``): every subject's directory
line, its objects in a random order, and nothing else.

Held-out phrasings never appear. Documents are plain strings; the tokenizer's end-of-text token
separates them when the corpus is tokenized.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from workbench.world.facts import Fact, World, statement
from workbench.world.relations import relation

NEW_FACT_PREFIX = "New fact: "
DIRECTORY_ORDERS = ("world", "shuffled")
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
    keyed_update_fraction: float = 0.0
    facts_per_keyed_document: tuple[int, int] = (1, 4)
    prompts_per_keyed_document: tuple[int, int] = (4, 8)
    # Shares of the keyed documents' Prompt lines, in the order of KEYED_PROMPTS.
    keyed_prompt_shares: tuple[float, float, float, float] = (0.40, 0.20, 0.25, 0.15)
    # The share of keyed documents whose New fact lines (at least two) all state one relation, so
    # that only the subject tells which new object a Prompt line of that relation takes.
    keyed_shared_relation_fraction: float = 0.0
    # Of those documents, the share about people who share a name part (the hardest to tell apart).
    keyed_namesake_fraction: float = 0.0
    # The order of the objects in a directory line: "world" (the world's fixed order) or "shuffled".
    directory_order: str = "world"
    # How many subject paragraphs make one document (drawn uniformly between the bounds).
    subjects_per_document: tuple[int, int] = (1, 1)
    # The share of sentences that name their subject as a ``confusable_mention``.
    confusable_fraction: float = 0.0

    def __post_init__(self):
        for name in ("demonstrations_per_update_document", "facts_per_keyed_document", "prompts_per_keyed_document",
                     "keyed_prompt_shares", "subjects_per_document"):  # lists when read from JSON
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 0 <= self.keyed_update_fraction < 1:
            raise ValueError(f"keyed_update_fraction must lie in [0, 1), got {self.keyed_update_fraction}")
        if self.directory_order not in DIRECTORY_ORDERS:
            raise ValueError(f"directory_order must be one of {DIRECTORY_ORDERS}, got {self.directory_order!r}")
        low, high = self.subjects_per_document
        if not 1 <= low <= high:
            raise ValueError(f"subjects_per_document must be (low, high) with 1 <= low <= high, got {(low, high)}")
        for name in ("keyed_shared_relation_fraction", "keyed_namesake_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.confusable_fraction <= 1:
            raise ValueError(f"confusable_fraction must lie in [0, 1], got {self.confusable_fraction}")


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


def directory_line(world: World, subject: str, rng: random.Random | None = None) -> str:
    """``"<subject> <object>, <object>, ... ."``: the objects of the subject's base facts with no
    relation words, so the token right after the name already depends on who it is. In world
    order, or with ``rng`` in a random order: then the name's last token predicts any one of the
    subject's attributes, so every attribute is worth assembling there."""
    objects = [fact.object for fact in world.facts_about(subject) if relation(fact.relation).is_base]
    if rng is not None:
        rng.shuffle(objects)
    return f"{subject} {', '.join(objects)}."


def confusable_mention(rng: random.Random, world: World, subject: str) -> str:
    """``"<subject> (not to be confused with <other>)"``: for a person, another person who shares a
    first or family name with them (any other person when none does); otherwise another subject of
    the same kind."""
    kind = world.entity(subject).kind
    namesakes = world.namesakes(subject) if kind == "person" else []
    others = namesakes or [entity.name for entity in world.subjects(kind) if entity.name != subject]
    other = rng.choice(others)
    return f"{subject} (not to be confused with {other})"


def subject_paragraph(rng: random.Random, world: World, subject: str, config: CorpusConfig = CorpusConfig()) -> str:
    """Every fact about ``subject`` in random phrasings and order. After the first sentence, each
    sentence names the subject by an anaphor ("this person", "this city", ...) instead with
    probability ``config.anaphora_fraction``, so that a later sentence can only be completed by
    reading the subject's identity from its earlier mention. A sentence that names the subject
    names it as a ``confusable_mention`` with probability ``config.confusable_fraction``. With
    probability ``config.directory_fraction`` the paragraph opens with the subject's
    ``directory_line`` (objects in ``config.directory_order``). (No random number is drawn for a
    fraction of 0, so the default corpus is unchanged by these options.)"""
    facts = world.facts_about(subject)
    rng.shuffle(facts)
    anaphor = ANAPHORS[world.entity(subject).kind]
    sentences = []
    if config.directory_fraction and rng.random() < config.directory_fraction:
        sentences.append(directory_line(world, subject, rng if config.directory_order == "shuffled" else None))
    for index, fact in enumerate(facts):
        sentence = random_statement(rng, fact)
        if index and config.anaphora_fraction and rng.random() < config.anaphora_fraction:
            sentence = anaphoric(sentence, subject, anaphor)
        elif config.confusable_fraction and rng.random() < config.confusable_fraction:
            sentence = sentence.replace(subject, confusable_mention(rng, world, subject), 1)
        sentences.append(sentence)
    return " ".join(sentences)


def grouped(rng: random.Random, paragraphs: list[str], sizes: tuple[int, int]) -> list[str]:
    """``paragraphs`` in a random order, joined into documents of ``sizes[0]`` to ``sizes[1]``
    paragraphs each (the last may be shorter); unchanged, and no random number drawn, for ``(1, 1)``."""
    if sizes == (1, 1):
        return paragraphs
    paragraphs = rng.sample(paragraphs, len(paragraphs))
    documents, start = [], 0
    while start < len(paragraphs):
        size = rng.randint(*sizes)
        documents.append(" ".join(paragraphs[start:start + size]))
        start += size
    return documents


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


# What the Prompt lines of a subject-keyed update document ask (their shares: CorpusConfig).
KEYED_PROMPTS = ("edited", "same_subject", "same_relation", "unrelated")
STORED_OBJECT_SHARE = 0.10  # New fact lines that state the object the world already has


def update_phrasings(relation_name: str) -> tuple[str, ...]:
    """The corpus phrasings subject-keyed update documents use: all but the relation's last."""
    corpus = relation(relation_name).corpus
    return corpus[:-1] if len(corpus) > 1 else corpus


def _keyed_statement(rng: random.Random, fact: Fact, avoid: str | None = None) -> str:
    """``fact`` in a random ``update_phrasings`` phrasing (another than ``avoid`` where there is one)."""
    phrasings = [p for p in update_phrasings(fact.relation) if p != avoid] or list(update_phrasings(fact.relation))
    return statement(rng.choice(phrasings).format(fact.subject), fact.object)


class KeyedFactPool:
    """The facts subject-keyed update documents draw from (train-split base facts), indexed so that a
    document's draws cost no pass over all of them. Every view keeps the order of ``facts``, so a
    document drawn through the index is the one a scan of ``facts`` would give for the same seed.

    A scope is ``None`` (all the facts) or a relation's name (its facts)."""

    def __init__(self, world: World, facts: list[Fact]):
        self.world, self.facts = world, facts
        self._lists: dict[str | None, list[Fact]] = defaultdict(list, {None: facts})
        for fact in facts:
            self._lists[fact.relation].append(fact)
        # (scope, entity) -> positions in the scope's list of the facts about or pointing to the entity
        self._touching: dict[tuple[str | None, str], list[int]] = defaultdict(list)
        # (relation, name part) -> positions in the relation's list of the facts about a subject with that part
        self._with_part: dict[tuple[str, str], list[int]] = defaultdict(list)
        for scope, scoped in self._lists.items():
            for position, fact in enumerate(scoped):
                self._touching[(scope, fact.subject)].append(position)
                self._touching[(scope, fact.object)].append(position)
                if scope is not None:
                    for part in dict.fromkeys(world.entity(fact.subject).parts):
                        self._with_part[(scope, part)].append(position)

    def of_relation(self, relation_name: str) -> list[Fact]:
        return self._lists.get(relation_name, [])

    def without(self, entities: Collection[str], relation_name: str | None = None) -> _FactsWithout:
        """The facts (of ``relation_name``, or all) neither about nor pointing to any of ``entities``,
        as a read-only sequence."""
        dropped = {position for name in entities for position in self._touching.get((relation_name, name), ())}
        return _FactsWithout(self._lists.get(relation_name, []), sorted(dropped))

    def with_name_part(self, relation_name: str, part: str) -> list[Fact]:
        """The facts of ``relation_name`` about subjects whose name has the part ``part``."""
        scoped = self._lists.get(relation_name, [])
        return [scoped[p] for p in self._with_part.get((relation_name, part), ())]

    def part_sharers_without(self, subject: str, relation_name: str, entities: Collection[str]) -> list[Fact]:
        """The facts of ``relation_name`` about subjects that share a name part with ``subject``, less
        those about or pointing to any of ``entities``."""
        scoped = self._lists.get(relation_name, [])
        positions = sorted({position for part in self.world.entity(subject).parts
                            for position in self._with_part.get((relation_name, part), ())})
        return [scoped[p] for p in positions if scoped[p].subject not in entities and scoped[p].object not in entities]


class _FactsWithout(Sequence):
    """The list ``facts`` less the positions ``dropped`` (ascending), without copying it."""

    def __init__(self, facts: list[Fact], dropped: list[int]):
        self.facts, self.dropped = facts, dropped

    def __len__(self) -> int:
        return len(self.facts) - len(self.dropped)

    def __getitem__(self, position: int) -> Fact:
        if not 0 <= position < len(self):
            raise IndexError(position)
        index = position
        for dropped in self.dropped:  # each dropped position at or before the target shifts it on
            if dropped > index:
                break
            index += 1
        return self.facts[index]


def _keyed_prompt(rng: random.Random, pool: KeyedFactPool, kind: str, edited: Fact, phrasing: str,
                  edited_subjects: Collection[str]) -> str:
    """One Prompt line of ``kind`` (one of ``KEYED_PROMPTS``) about the ``edited`` (new) fact; the lines
    answered from memory state facts of ``pool`` neither about nor pointing to an edited subject."""
    if kind == "edited":
        same = rng.random() < 0.5
        template = phrasing if same else rng.choice([p for p in update_phrasings(edited.relation)
                                                      if p != phrasing] or [phrasing])
        return statement(template.format(edited.subject), edited.object)
    if kind == "same_subject":
        others = [f for f in pool.world.facts_about(edited.subject)
                  if f.relation != edited.relation and relation(f.relation).derived_from is None]
        if others:
            return _keyed_statement(rng, rng.choice(others))
    if kind in ("same_subject", "same_relation"):
        sharers = pool.part_sharers_without(edited.subject, edited.relation, edited_subjects)
        peers = pool.without(edited_subjects, edited.relation)
        return _keyed_statement(rng, rng.choice(sharers if sharers and rng.random() < 0.5 else peers))
    return _keyed_statement(rng, rng.choice(pool.without(edited_subjects)))


def _keyed_fact_pool(rng: random.Random, pool: KeyedFactPool, config: CorpusConfig) -> tuple[list[Fact], int]:
    """The facts a keyed document's New fact lines are drawn from, and how many it states. Usually
    every fact of ``pool`` and ``config.facts_per_keyed_document``; with probability
    ``config.keyed_shared_relation_fraction``, the facts of one relation and at least two of
    them, and of those documents a share ``config.keyed_namesake_fraction`` about people who all
    share one name part (where at least two people with the relation have it)."""
    low, high = config.facts_per_keyed_document
    if not (config.keyed_shared_relation_fraction and rng.random() < config.keyed_shared_relation_fraction):
        return pool.facts, rng.randint(low, high)
    world = pool.world
    first = rng.choice(pool.facts)
    same_relation = pool.of_relation(first.relation)
    if config.keyed_namesake_fraction and rng.random() < config.keyed_namesake_fraction \
            and world.entity(first.subject).kind == "person":
        part = rng.choice(world.entity(first.subject).parts)
        sharing = pool.with_name_part(first.relation, part)
        if len(sharing) >= 2:
            return sharing, min(rng.randint(max(low, 2), max(high, 2)), len(sharing))
    return same_relation, rng.randint(max(low, 2), max(high, 2))


def keyed_update_document(rng: random.Random, pool: KeyedFactPool, excluded: set[tuple[str, str, str]],
                          config: CorpusConfig) -> str:
    """A subject-keyed update document (see the module docstring): New fact lines about distinct
    subjects (a counterfactual object, or with ``STORED_OBJECT_SHARE`` the stored one), then Prompt
    lines of the kinds of ``KEYED_PROMPTS`` in the shares ``config.keyed_prompt_shares``. With
    probability ``config.keyed_shared_relation_fraction`` the New fact lines (at least two) share
    one relation (``_keyed_fact_pool``)."""
    world = pool.world
    edits: dict[str, tuple[Fact, str]] = {}
    drawn_from, n_facts = _keyed_fact_pool(rng, pool, config)
    while len(edits) < n_facts:
        fact = rng.choice(drawn_from)
        new_object = fact.object if rng.random() < STORED_OBJECT_SHARE else rng.choice(
            [o for o in world.objects_of_relation(fact.relation) if o != fact.object])
        if fact.subject in edits or (fact.subject, fact.relation, new_object) in excluded:
            continue
        phrasing = rng.choice(update_phrasings(fact.relation))
        edits[fact.subject] = (Fact(fact.subject, fact.relation, new_object), phrasing)
    lines = [NEW_FACT_PREFIX + statement(phrasing.format(new.subject), new.object) for new, phrasing in edits.values()]
    for _ in range(rng.randint(*config.prompts_per_keyed_document)):
        new, phrasing = rng.choice(list(edits.values()))
        kind = rng.choices(KEYED_PROMPTS, config.keyed_prompt_shares)[0]
        lines.append(PROMPT_PREFIX + _keyed_prompt(rng, pool, kind, new, phrasing, edits))
    return "\n".join(lines)


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
    keyed_pool = KeyedFactPool(world, update_candidates)
    n_mixed = round(config.mixed_documents_per_subject * len(subjects))
    n_update = round(config.update_documents_per_subject * len(subjects))
    fraction = config.keyed_update_fraction
    n_keyed = round((len(subjects) + n_mixed + n_update) * fraction / (1 - fraction))
    low, high = config.demonstrations_per_update_document
    while True:
        paragraphs = [subject_paragraph(rng, world, s, config) for s in subjects]
        documents = grouped(rng, paragraphs, config.subjects_per_document)
        documents += [mixed_document(rng, world, config.statements_per_mixed_document)
                      for _ in range(n_mixed)]
        documents += [update_document(rng, world, update_candidates, excluded_edits, rng.randint(low, high),
                                      config.update_neighbour_lines) for _ in range(n_update)]
        documents += [keyed_update_document(rng, keyed_pool, excluded_edits, config)
                      for _ in range(n_keyed)]
        rng.shuffle(documents)
        yield documents


def directory_rounds(world: World, seed: int) -> Iterator[list[str]]:
    """An endless stream of rounds of the enrichment stage: every subject's ``directory_line`` once
    per round, objects and subjects in a random order, one line per document; deterministic under
    ``seed``."""
    rng = random.Random(seed)
    subjects = [entity.name for entity in world.subjects()]
    while True:
        documents = [directory_line(world, subject, rng) for subject in subjects]
        rng.shuffle(documents)
        yield documents
