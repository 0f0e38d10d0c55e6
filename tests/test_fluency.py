"""Fluency: n-gram entropy arithmetic and greedy generation without a KV cache."""

import math

import torch

from workbench.evaluation.fluency import greedy_continuation, ngram_entropy
from workbench.model.tokens import encode_prompt


def test_ngram_entropy_of_known_texts():
    # "a b a b a": bigrams ab, ba, ab, ba (1 bit); trigrams aba, bab, aba (H(2/3, 1/3))
    trigram = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert math.isclose(ngram_entropy("a b a b a"), 1 / 3 * 1.0 + 2 / 3 * trigram)
    assert ngram_entropy("w " * 20) == 0.0  # pure repetition
    assert ngram_entropy("one two three four five six") > ngram_entropy("one two one two one two")
    assert ngram_entropy("") == 0.0


@torch.no_grad()
def test_greedy_continuation_follows_the_argmax_token_by_token(tiny_bridge):
    prompt = "The capital of"
    text = greedy_continuation(tiny_bridge, prompt, 6)
    ids = encode_prompt(tiny_bridge.tokenizer, prompt)
    for _ in range(6):
        ids.append(int(tiny_bridge(torch.tensor([ids]))[0, -1].argmax()))
    assert text == tiny_bridge.tokenizer.decode(ids[-6:])
    assert greedy_continuation(tiny_bridge, prompt, 0) == ""
