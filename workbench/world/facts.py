"""The fact world: entities with invented names and the facts that relate them.

``build_world(config)`` is deterministic under ``config.seed``. A world holds every fact of every
relation in ``relations.RELATIONS`` (base, two-hop and reverse facts alike) and a split of its
subjects into ``train`` and ``test`` (disjoint; learned editors train on ``train``).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import cached_property

from workbench.world import names
from workbench.world.relations import (
    CLIMATES,
    COMPANY_SUFFIXES,
    INDUSTRIES,
    INSTRUMENTS,
    PRODUCTS,
    PROFESSIONS,
    RELATIONS,
)

SUBJECT_KINDS = ("person", "city", "country", "company")
ENTITY_KINDS = (*SUBJECT_KINDS, "language", "continent")


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of the world; ``seed`` fixes every random choice."""

    seed: int = 0
    n_countries: int = 20
    cities_per_country: int = 4
    n_companies: int = 50
    n_people: int = 250
    n_first_names: int = 30
    n_family_names: int = 30
    n_languages: int = 10
    n_continents: int = 5
    max_name_syllables: int = 3
    test_fraction: float = 0.2

    def __post_init__(self):
        if self.n_first_names * self.n_family_names < self.n_people:
            raise ValueError("n_first_names * n_family_names must be at least n_people")
        if self.n_companies > self.n_people:
            raise ValueError("every company needs its own founder: n_companies <= n_people")
        if not 0 < self.test_fraction < 1:
            raise ValueError("test_fraction must lie strictly between 0 and 1")


@dataclass(frozen=True)
class Entity:
    """A named subject or object. ``parts`` are the shared name parts (people only)."""

    name: str
    kind: str
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str


@dataclass(frozen=True)
class World:
    """Entities, facts and the train/test split of subjects."""

    config: WorldConfig
    entities: tuple[Entity, ...]
    facts: tuple[Fact, ...]
    test_subjects: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def _objects(self) -> dict[tuple[str, str], str]:
        return {(fact.subject, fact.relation): fact.object for fact in self.facts}

    @cached_property
    def _entities_by_name(self) -> dict[str, Entity]:
        return {entity.name: entity for entity in self.entities}

    @cached_property
    def _subjects_by_relation_object(self) -> dict[tuple[str, str], list[str]]:
        index: dict[tuple[str, str], list[str]] = defaultdict(list)
        for fact in self.facts:
            index[(fact.relation, fact.object)].append(fact.subject)
        return index

    def entity(self, name: str) -> Entity:
        try:
            return self._entities_by_name[name]
        except KeyError:
            raise ValueError(f"{name!r} is not an entity of this world") from None

    def object_of(self, subject: str, relation_name: str) -> str | None:
        """The object of ``(subject, relation)``, or None when the subject lacks that relation."""
        return self._objects.get((subject, relation_name))

    def subjects_with(self, relation_name: str, obj: str) -> list[str]:
        """Subjects whose ``relation_name`` object is ``obj``, in world order."""
        return list(self._subjects_by_relation_object.get((relation_name, obj), ()))

    @cached_property
    def _facts_by_subject(self) -> dict[str, list[Fact]]:
        index: dict[str, list[Fact]] = defaultdict(list)
        for fact in self.facts:
            index[fact.subject].append(fact)
        return index

    @cached_property
    def _objects_by_relation(self) -> dict[str, list[str]]:
        index: dict[str, dict[str, None]] = defaultdict(dict)
        for fact in self.facts:
            index[fact.relation].setdefault(fact.object)
        return {name: list(objects) for name, objects in index.items()}

    def facts_about(self, subject: str) -> list[Fact]:
        """The subject's facts in world order (a fresh list)."""
        return list(self._facts_by_subject.get(subject, ()))

    def objects_of_relation(self, relation_name: str) -> list[str]:
        """Every distinct object the relation takes, in first-seen order."""
        return list(self._objects_by_relation.get(relation_name, ()))

    @cached_property
    def _subjects_by_kind(self) -> dict[str | None, list[Entity]]:
        index: dict[str | None, list[Entity]] = {kind: [] for kind in (None, *SUBJECT_KINDS)}
        for entity in self.entities:
            if entity.kind in SUBJECT_KINDS:
                index[None].append(entity)
                index[entity.kind].append(entity)
        return index

    def subjects(self, kind: str | None = None) -> list[Entity]:
        """Entities that are subjects of facts, optionally of one kind, in world order (a fresh list)."""
        return list(self._subjects_by_kind.get(kind, ()))

    @cached_property
    def _namesakes(self) -> dict[str, tuple[str, ...]]:
        people = self._subjects_by_kind["person"]
        position = {person.name: index for index, person in enumerate(people)}
        by_part: dict[str, list[str]] = defaultdict(list)
        for person in people:
            for part in dict.fromkeys(person.parts):
                by_part[part].append(person.name)
        return {person.name: tuple(sorted({name for part in person.parts for name in by_part[part]} - {person.name},
                                          key=position.__getitem__)) for person in people}

    def namesakes(self, person: str) -> list[str]:
        """The other people who share a first or family name with ``person``, in world order."""
        if self.entity(person).kind != "person":
            raise ValueError(f"{person!r} is not a person; only people have namesakes")
        return list(self._namesakes[person])

    def split_of(self, subject: str) -> str:
        return "test" if subject in self.test_subjects else "train"

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "entities": [asdict(e) for e in self.entities],
            "facts": [asdict(f) for f in self.facts],
            "test_subjects": sorted(self.test_subjects),
        }

    @classmethod
    def from_dict(cls, data: dict) -> World:
        return cls(
            config=WorldConfig(**data["config"]),
            entities=tuple(Entity(e["name"], e["kind"], tuple(e["parts"])) for e in data["entities"]),
            facts=tuple(Fact(**f) for f in data["facts"]),
            test_subjects=frozenset(data["test_subjects"]),
        )


def build_world(config: WorldConfig) -> World:
    """Generate the world described by ``config`` (deterministic under ``config.seed``)."""
    rng = random.Random(config.seed)
    taken: set[str] = set()
    entities: list[Entity] = []
    facts: list[Fact] = []

    def add(subject: str, relation_name: str, obj: str) -> None:
        facts.append(Fact(subject, relation_name, obj))

    syllables = config.max_name_syllables
    continents = names.unique_words(rng, config.n_continents, taken, max_syllables=syllables)
    languages = [w + rng.choice(("ish", "ic", "ese", "i")) for w in
                 names.unique_words(rng, config.n_languages, taken, max_syllables=2)]
    entities += [Entity(n, "continent") for n in continents]
    entities += [Entity(n, "language") for n in languages]

    countries = names.unique_words(rng, config.n_countries, taken, max_syllables=syllables)
    cities_of: dict[str, list[str]] = {}
    for i, country in enumerate(countries):
        entities.append(Entity(country, "country"))
        add(country, "official_language", languages[i % len(languages)])
        add(country, "continent", rng.choice(continents))
        cities_of[country] = names.unique_words(rng, config.cities_per_country, taken, max_syllables=syllables)
    cities = [city for country in countries for city in cities_of[country]]
    for country in countries:
        for city in cities_of[country]:
            entities.append(Entity(city, "city"))
            add(city, "located_in", country)
            add(city, "climate", rng.choice(CLIMATES))
            add(city, "famous_for", rng.choice(PRODUCTS))
        add(country, "capital", cities_of[country][0])

    first_names = names.unique_words(rng, config.n_first_names, taken, max_syllables=2)
    family_names = names.unique_words(rng, config.n_family_names, taken, max_syllables=syllables)
    pairs = _balanced_name_pairs(first_names, family_names, config.n_people)
    rng.shuffle(pairs)
    people = [f"{first} {family}" for first, family in pairs]

    stems = names.unique_words(rng, config.n_companies, taken, max_syllables=syllables)
    companies = [f"{stem} {rng.choice(COMPANY_SUFFIXES)}" for stem in stems]
    founders = rng.sample(people, config.n_companies)
    for company, founder in zip(companies, founders):
        entities.append(Entity(company, "company"))
        add(company, "headquarters", rng.choice(cities))
        add(company, "industry", rng.choice(INDUSTRIES))
        add(company, "founder", founder)

    for person, parts in zip(people, pairs):
        entities.append(Entity(person, "person", parts))
        add(person, "born_in", rng.choice(cities))
        add(person, "profession", rng.choice(PROFESSIONS))
        add(person, "employer", rng.choice(companies))
        add(person, "instrument", rng.choice(INSTRUMENTS))
        add(person, "native_language", rng.choice(languages))

    facts += _derived_facts(facts)
    test_subjects = _split_subjects(rng, entities, config.test_fraction)
    return World(config, tuple(entities), tuple(facts), frozenset(test_subjects))


def _balanced_name_pairs(first_names: list[str], family_names: list[str], count: int) -> list[tuple[str, str]]:
    """``count`` distinct (first, family) pairs using every part about equally often.

    Person ``i`` takes first name ``i mod F`` and family name ``(i + i // F) mod G``; for the
    sizes the presets use this never repeats a pair (checked).
    """
    n_first, n_family = len(first_names), len(family_names)
    pairs = [(first_names[i % n_first], family_names[(i + i // n_first) % n_family]) for i in range(count)]
    if len(set(pairs)) != count:
        raise ValueError(f"{n_first} first names and {n_family} family names cannot name {count} people "
                         "uniquely in a balanced way; use more name parts")
    return pairs


def _derived_facts(base_facts: list[Fact]) -> list[Fact]:
    """Reverse facts (``inverse_of``) and two-hop facts (``derived_from``) of the base facts."""
    objects = {(f.subject, f.relation): f.object for f in base_facts}
    derived: list[Fact] = []
    for rel in RELATIONS:
        if rel.inverse_of is not None:
            derived += [Fact(f.object, rel.name, f.subject) for f in base_facts
                        if f.relation == rel.inverse_of]
        elif rel.derived_from is not None:
            first, second = rel.derived_from
            for f in base_facts:
                if f.relation == first and (f.object, second) in objects:
                    derived.append(Fact(f.subject, rel.name, objects[(f.object, second)]))
    return derived


def _split_subjects(rng: random.Random, entities: list[Entity], test_fraction: float) -> set[str]:
    """Pick ``test_fraction`` of the subjects of each kind for the test split."""
    test: set[str] = set()
    for kind in SUBJECT_KINDS:
        names_of_kind = sorted(e.name for e in entities if e.kind == kind)
        rng.shuffle(names_of_kind)
        test.update(names_of_kind[: max(1, round(test_fraction * len(names_of_kind)))])
    return test


def statement(prompt: str, obj: str) -> str:
    """The sentence stating a fact: ``"<prompt> <object>."``."""
    return f"{prompt} {obj}."
