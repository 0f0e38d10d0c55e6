"""Attention knockout (Geva et al. 2023, "Dissecting recall of factual associations"): block the
prompt's last token from attending to the subject at some layers, and see how much of the
answer's probability is lost.

For each layer ``l``, the last token's attention scores to the blocked positions are set to
``-inf`` before the softmax (every head) in the ``window`` layers centred on ``l`` (clipped to the
model), so the attention goes to the other positions. ``blocked`` is ``"last_subject"`` (the
subject's last token only) or ``"subject"`` (all its tokens). The result per layer is the relative
change of the answer's first-token probability, ``(p_blocked - p) / p``: -1 means the answer is
gone, 0 that the subject was not read there. All layers are measured in one batched forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workbench.core.sites import attention_scores_hook
from workbench.model.tokens import encode_prompt, encode_target, require_fits_context, subject_token_span

BLOCKED = ("last_subject", "subject")


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """The ``window`` layers centred on ``layer`` (the later one first for an even window), clipped."""
    start = layer - (window - 1) // 2
    return range(max(0, start), min(n_layers, start + window))


@torch.no_grad()
def attention_knockout(model, prompt: str, subject: str, answer: str, window: int = 1,
                       blocked: str = "last_subject") -> np.ndarray:
    """``[n_layers]``: the relative change of p(answer's first token) with the last token's attention
    to the ``blocked`` subject positions knocked out around each layer (see the module docstring)."""
    if blocked not in BLOCKED:
        raise ValueError(f"blocked is one of {BLOCKED}, not {blocked!r}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    tokenizer, n_layers = model.tokenizer, model.cfg.n_layers
    require_fits_context(model, tokenizer, [prompt])
    start, end = subject_token_span(tokenizer, prompt, subject)
    keys = list(range(end - 1, end)) if blocked == "last_subject" else list(range(start, end))
    ids = torch.tensor([encode_prompt(tokenizer, prompt)] * (n_layers + 1), device=model.W_E.device)
    rows_at = {layer: [row for row in range(n_layers) if layer in window_layers(row, window, n_layers)]
               for layer in range(n_layers)}  # row n_layers is the clean run

    def knock_out(layer: int):
        def hook(scores, hook):
            scores = scores.clone()
            rows = torch.tensor(rows_at[layer], device=scores.device)
            scores[rows[:, None], :, -1, torch.tensor(keys, device=scores.device)[None, :]] = float("-inf")
            return scores
        return hook

    hooks = [(attention_scores_hook(layer), knock_out(layer)) for layer in range(n_layers) if rows_at[layer]]
    with model.hooks(fwd_hooks=hooks):
        probs = model(ids)[:, -1].float().softmax(-1)[:, encode_target(tokenizer, answer)[0]]
    clean = probs[-1].item()
    return ((probs[:-1] - clean) / clean).cpu().numpy()


def average_knockout(model, facts: Sequence[dict], window: int = 1, blocked: str = "last_subject") -> np.ndarray:
    """``[n_layers]``: ``attention_knockout`` averaged over ``facts`` (dicts with ``prompt``,
    ``subject`` and ``answer``; known facts, so that p is not tiny)."""
    if not facts:
        raise ValueError("no facts to knock out attention on")
    return np.mean([attention_knockout(model, f["prompt"], f["subject"], f["answer"], window, blocked)
                    for f in facts], axis=0)
