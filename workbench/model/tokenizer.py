"""A byte-level BPE tokenizer trained on the world's corpus, with names kept multi-token.

The tokenizer is trained on corpus text in which every invented word (name parts, city, country,
company-stem, language and continent names) is replaced by a fresh random syllable word. Merges
therefore learn the template vocabulary and common syllables but never a whole name, so names
split into syllable-sized tokens. The words of the entity kinds a recipe keeps whole (all of
them, or for example only people's name parts) are left as they are, so with a large enough
vocabulary each of them becomes one token.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from workbench.world import World
from workbench.world.names import random_word

END_OF_TEXT = "<|endoftext|>"


def invented_words(world: World, kinds: Iterable[str] | None = None) -> set[str]:
    """Every word of the world that is invented (not an ordinary English word), of the entities
    of ``kinds`` (all kinds if None)."""
    words: set[str] = set()
    for entity in world.entities:
        if kinds is not None and entity.kind not in kinds:
            continue
        if entity.kind == "person":
            words.update(entity.parts)
        elif entity.kind == "company":
            words.add(entity.name.split(" ")[0])
        else:
            words.add(entity.name)
    return words


def anonymised_texts(world: World, documents: Iterable[str], seed: int,
                     keep_kinds: Iterable[str] = ()) -> Iterator[str]:
    """``documents`` with every invented word replaced by a random syllable word, except the words
    of the entities of ``keep_kinds``."""
    keep = set(keep_kinds)
    words = invented_words(world, {entity.kind for entity in world.entities} - keep)
    if not words:
        yield from documents
        return
    rng = random.Random(seed)
    pattern = re.compile(r"\b(" + "|".join(sorted(words, key=len, reverse=True)) + r")\b")
    for document in documents:
        yield pattern.sub(lambda _: random_word(rng), document)


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE; ``<|endoftext|>`` is BOS, EOS, PAD and UNK."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
    )
