"""Fluency: the n-gram entropy of a short greedy generation (the ROME paper's "generation entropy").

An edit that breaks the model tends to make it repeat itself; repetition lowers the entropy of the
distribution of word n-grams in what it generates. ``ngram_entropy`` is the weighted mean of the
bigram and trigram entropies (in bits) with weights 1/3 and 2/3, as in Meng et al. (2022). The
generation is greedy, one full forward pass per new token: TransformerBridge's KV cache gives
wrong tokens with transformers 5.x, and a model of a few hundred tokens of context needs none.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from workbench.model.tokens import encode_prompt, logits_of

NGRAM_WEIGHTS = {2: 1 / 3, 3: 2 / 3}


@torch.no_grad()
def greedy_continuation(model, prompt: str, n_tokens: int) -> str:
    """The ``n_tokens`` most likely next tokens after ``prompt``, one at a time, decoded as text
    (generation stops early at the end of the model's context)."""
    ids = encode_prompt(model.tokenizer, prompt)
    start = len(ids)
    device = model.W_E.device
    while len(ids) - start < n_tokens and len(ids) < model.cfg.n_ctx:
        logits = logits_of(model, torch.tensor([ids], device=device))
        ids.append(int(logits[0, -1].argmax()))
    return model.tokenizer.decode(ids[start:])


def ngram_entropy(text: str) -> float:
    """Weighted mean of the entropies (bits) of the word bigram and trigram distributions of
    ``text``; 0 for text too short to have any n-gram."""
    words = text.split()
    entropies = {}
    for n in NGRAM_WEIGHTS:
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        entropies[n] = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
    return sum(weight * entropies[n] for n, weight in NGRAM_WEIGHTS.items())
