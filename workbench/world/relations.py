"""The relations of the fact world and the phrasings that express them.

A phrasing is a prompt template with one ``{}`` for the subject; the statement of a fact is the
prompt followed by a space, the object and a full stop. ``corpus`` phrasings appear in the
training corpus; ``heldout`` phrasings never do and measure generalisation to unseen wording.

Conventions the world relies on (tests check them):

- within one subject kind, no phrasing (of any relation) is a prefix of another, so every prompt
  asks for exactly one relation;
- ``derived_from`` names the two hops of a two-hop relation (``birth_country`` is the
  ``located_in`` of the ``born_in`` object); ``inverse_of`` names the relation a reverse relation
  inverts (``capital_of`` inverts ``capital``). Base relations have neither.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    """One relation: subject and object kinds, its phrasings, and how it is derived (if at all)."""

    name: str
    subject_kind: str
    object_kind: str
    corpus: tuple[str, ...]
    heldout: tuple[str, ...]
    derived_from: tuple[str, str] | None = None
    inverse_of: str | None = None

    @property
    def is_base(self) -> bool:
        return self.derived_from is None and self.inverse_of is None

    def phrasings(self, which: str) -> tuple[str, ...]:
        """``which`` is ``"corpus"`` or ``"heldout"``."""
        if which not in ("corpus", "heldout"):
            raise ValueError(f"phrasing set must be 'corpus' or 'heldout', got {which!r}")
        return self.corpus if which == "corpus" else self.heldout


def _rel(name, subject_kind, object_kind, corpus, heldout, **kwargs) -> Relation:
    return Relation(name, subject_kind, object_kind, tuple(corpus), tuple(heldout), **kwargs)


RELATIONS: tuple[Relation, ...] = (
    # --- people -------------------------------------------------------------------------------
    _rel("born_in", "person", "city",
         ["{} was born in", "The birthplace of {} is", "{} came into the world in",
          "{}'s place of birth is", "{} is a native of", "{} spent an early childhood in"],
         ["The hometown of {} is", "{} originally comes from the city of"]),
    _rel("profession", "person", "profession",
         ["{} works as a", "{} is employed as a", "The profession of {} is",
          "{} earns a living as a", "By profession, {} is a", "{}'s job title is"],
         ["The occupation of {} is", "{} makes a living working as a"]),
    _rel("employer", "person", "company",
         ["{} works for", "{} is employed by", "The employer of {} is",
          "{} draws a salary from", "{} has a job at", "{}'s employer is"],
         ["{} is on the payroll of", "The company that employs {} is"]),
    _rel("instrument", "person", "instrument",
         ["{} plays the", "The instrument of {} is the", "{} performs on the",
          "{}'s favourite instrument is the", "{} practises the", "In the evenings {} plays the"],
         ["{} is a skilled player of the", "The musical instrument {} plays is the"]),
    _rel("native_language", "person", "language",
         ["The mother tongue of {} is", "{}'s native language is", "{} grew up speaking",
          "The first language of {} is", "{} was raised speaking", "At home {} speaks"],
         ["{} is a native speaker of", "The language {} spoke as a child is"]),
    _rel("founded", "person", "company",
         ["{} founded", "{} is the founder of", "The company founded by {} is",
          "{} started the company", "{} established the firm", "{} set up the business"],
         ["{} created the enterprise", "The firm that {} founded is"],
         inverse_of="founder"),
    _rel("birth_country", "person", "country",
         ["The country where {} was born is", "{}'s country of birth is",
          "{}'s birth country is", "{} comes from the country of", "The homeland of {} is",
          "By birth, {} belongs to the nation of"],
         ["The nation in which {} was born is", "{} hails from the country of"],
         derived_from=("born_in", "located_in")),
    _rel("employer_city", "person", "city",
         ["The company {} works for is based in", "The firm employing {} is located in",
          "{}'s workplace is in the city of", "{} commutes to the office in",
          "The office of {}'s employer is in", "Every day {} goes to work in"],
         ["The headquarters of the firm {} works for are in", "{} has an office job in the city of"],
         derived_from=("employer", "headquarters")),
    # --- cities -------------------------------------------------------------------------------
    _rel("located_in", "city", "country",
         ["{} is located in", "{} is a city in", "{} lies in the country of",
          "The country of {} is", "{} is part of", "{} can be found in"],
         ["{} is situated in the country of", "The nation that contains {} is"]),
    _rel("climate", "city", "climate",
         ["The climate of {} is", "{} has a climate that is", "{}'s weather is mostly",
          "The weather in {} is usually", "In {} the climate is",
          "Visitors describe the climate in {} as"],
         ["{} enjoys a climate described as", "The typical weather of {} is"]),
    _rel("famous_for", "city", "product",
         ["{} is famous for its", "The city of {} is best known for its",
          "{} is known for producing", "The most famous product of {} is",
          "{}'s best-known export is", "Travellers visit {} to buy its"],
         ["{} has long been renowned for its", "People associate {} with its"]),
    _rel("capital_of", "city", "country",
         ["{} is the capital of", "{} is the capital city of", "{} serves as the capital of",
          "The nation whose capital is {} is", "{} is the seat of government of",
          "{} hosts the government of"],
         ["{} functions as the capital of", "The country governed from {} is"],
         inverse_of="capital"),
    # --- countries ----------------------------------------------------------------------------
    _rel("capital", "country", "city",
         ["The capital of {} is", "{}'s capital is", "The capital city of {} is",
          "{} is governed from", "The seat of government of {} is", "{} has its capital in"],
         ["The government of {} sits in", "The capital of the country {} is"]),
    _rel("official_language", "country", "language",
         ["The official language of {} is", "In {} people speak", "The people of {} speak",
          "{}'s official language is", "Most people in {} speak", "The language spoken in {} is"],
         ["The main language of {} is", "Citizens of {} mostly speak"]),
    _rel("continent", "country", "continent",
         ["{} is a country in", "{} lies on the continent of", "The continent of {} is",
          "{} is situated on", "{}'s continent is", "Geographically, {} belongs to"],
         ["{} is a nation on the continent of", "The landmass where {} lies is"]),
    # --- companies ----------------------------------------------------------------------------
    _rel("headquarters", "company", "city",
         ["{} is headquartered in", "The headquarters of {} are in", "{} has its head office in",
          "{} is based in", "The main office of {} is in", "{}'s headquarters are located in"],
         ["{} runs its business from", "The head office of {} is in"]),
    _rel("industry", "company", "industry",
         ["{} operates in the sector of", "The industry of {} is",
          "{} is a company in the field of", "{} does business in", "{}'s main business is",
          "{} specialises in"],
         ["{} earns its revenue from", "The line of business of {} is"]),
    _rel("founder", "company", "person",
         ["{} was founded by", "The founder of {} is", "{} was started by",
          "{} was established by", "{}'s founder is", "The person who founded {} is"],
         ["{} owes its existence to", "{} was set up by"]),
    _rel("hq_country", "company", "country",
         ["{} is a company from", "The home country of {} is",
          "{} is registered in the country of", "{}'s home country is", "{} pays its taxes in",
          "The company {} comes from"],
         ["{} is legally based in the country of", "The nation where {} is headquartered is"],
         derived_from=("headquarters", "located_in")),
)

RELATIONS_BY_NAME: dict[str, Relation] = {relation.name: relation for relation in RELATIONS}


def relation(name: str) -> Relation:
    """The relation called ``name``; a clear error for an unknown name."""
    try:
        return RELATIONS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown relation {name!r}; known: {sorted(RELATIONS_BY_NAME)}") from None


# Objects that are ordinary words rather than invented names.
PROFESSIONS = ("pilot", "doctor", "lawyer", "baker", "painter", "teacher", "nurse", "farmer",
               "sailor", "banker", "chemist", "tailor", "carpenter", "journalist", "dentist",
               "plumber")
INSTRUMENTS = ("piano", "violin", "cello", "flute", "guitar", "harp", "trumpet", "drums",
               "oboe", "clarinet", "banjo", "organ")
CLIMATES = ("arid", "tropical", "temperate", "polar", "humid", "rainy", "windy", "mild",
            "snowy", "foggy")
PRODUCTS = ("wine", "glass", "silk", "clocks", "cheese", "pottery", "leather", "paper", "salt",
            "honey", "tea", "carpets")
INDUSTRIES = ("shipping", "software", "mining", "banking", "textiles", "farming", "energy",
              "media", "insurance", "aviation", "retail", "robotics")
COMPANY_SUFFIXES = ("Industries", "Holdings", "Group", "Works", "Labs", "Trading", "Systems",
                    "Partners")
