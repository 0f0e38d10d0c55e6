"""Invented names built from a shared syllable inventory.

Every name the world uses is made of syllables drawn from one small inventory, so no syllable
identifies a name and a tokenizer trained on random syllable names splits names into
syllable-sized pieces. People's names are assembled from shared parts (first names and family
names each used by many people), so a single name part never identifies a person.
"""

from __future__ import annotations

import random

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
          "tr", "th")
NUCLEI = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "", "n", "r", "l", "s")


def random_syllable(rng: random.Random) -> str:
    """One syllable: onset + nucleus + (often empty) coda."""
    return rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS)


def random_word(rng: random.Random, min_syllables: int = 2, max_syllables: int = 3) -> str:
    """A capitalised word of ``min_syllables`` to ``max_syllables`` random syllables."""
    count = rng.randint(min_syllables, max_syllables)
    return "".join(random_syllable(rng) for _ in range(count)).capitalize()


def unique_words(rng: random.Random, count: int, taken: set[str], **word_kwargs) -> list[str]:
    """``count`` distinct new words, none already in ``taken`` (which is updated in place)."""
    words: list[str] = []
    while len(words) < count:
        word = random_word(rng, **word_kwargs)
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words
