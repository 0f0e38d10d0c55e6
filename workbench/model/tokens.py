"""Token utilities shared by tracing, editing and evaluation.

Conventions:

- Prompts are encoded without the tokenizer's own special tokens; when ``prepend_bos`` is true
  (the default) and the tokenizer has a BOS token, it is put in front, as TransformerLens does.
- Targets are words or phrases without a leading space; they are encoded as ``" " + target``
  because they continue a prompt that ends in a word.
- Batches are right-padded. Causal attention never lets a real token see a later pad, and
  positions of real tokens do not move, so no attention mask is needed.
- ``model`` is anything that maps token ids ``[batch, pos]`` to logits ``[batch, pos, d_vocab]``
  (a TransformerBridge) or to an output with ``.logits`` (a Hugging Face model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def encode_prompt(tokenizer, prompt: str, prepend_bos: bool = True) -> list[int]:
    """Token ids of ``prompt`` (with BOS in front when asked for and available)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if prepend_bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    return ids


def encode_target(tokenizer, target: str) -> list[int]:
    """Token ids of a target continuation; a clear error for an empty target."""
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target must be a non-empty string, got {target!r}")
    return tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"]


def subject_token_span(tokenizer, prompt: str, subject: str, prepend_bos: bool = True) -> tuple[int, int]:
    """Half-open token range ``[start, end)`` of the last occurrence of ``subject`` in ``prompt``.

    Positions count the BOS token when ``prepend_bos`` adds one. A token that covers the space
    before the subject (``" Karo"``) belongs to the subject.
    """
    subject = subject.strip() if isinstance(subject, str) else subject
    if not subject:
        raise ValueError(f"subject must be a non-empty string, got {subject!r}")
    char_start = prompt.rfind(subject)
    if char_start < 0:
        raise ValueError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    char_end = char_start + len(subject)
    encoding = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    covering = [i for i, (a, b) in enumerate(encoding["offset_mapping"]) if a < char_end and b > char_start]
    offset = 1 if prepend_bos and tokenizer.bos_token_id is not None else 0
    return covering[0] + offset, covering[-1] + 1 + offset


def require_fits_context(model, tokenizer, prompts: Sequence[str], answers: Sequence[str] = (),
                         prepend_bos: bool = True) -> None:
    """Refuse, before any work, a prompt that with the longest of ``answers`` after it is longer
    than the model's context (a clear ValueError instead of an index error deep in a forward pass)."""
    n_ctx = context_length(model)
    if n_ctx is None:
        return
    answer_tokens = max((len(encode_target(tokenizer, answer)) for answer in answers if answer), default=0)
    for prompt in prompts:
        n_tokens = len(encode_prompt(tokenizer, prompt, prepend_bos)) + answer_tokens
        if n_tokens > n_ctx:
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            raise ValueError(f"the prompt {shown!r} with its answer is {n_tokens} tokens, more than the model's "
                             f"context of {n_ctx}")


def context_length(model) -> int | None:
    """The longest sequence ``model`` (a TransformerBridge or a Hugging Face model) can read, if known."""
    if hasattr(model, "cfg"):
        return model.cfg.n_ctx
    config = getattr(model, "config", None)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def logits_of(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
    """The model's logits; a sequence longer than its context is a clear error, not an index error."""
    n_ctx = context_length(model)
    if n_ctx is not None and tokens.shape[-1] > n_ctx:
        raise ValueError(f"a sequence of {tokens.shape[-1]} tokens is longer than the model's context of "
                         f"{n_ctx} tokens")
    output = model(tokens)
    return output if isinstance(output, Tensor) else output.logits


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> Int[Tensor, "batch pos"]:
    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in sequences], dtype=torch.long)


def pad_id_of(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id):
        if candidate is not None:
            return candidate
    return 0


@dataclass(frozen=True)
class TargetScores:
    """Scores of one target per prompt.

    ``log_prob``: summed log-probability of all target tokens; ``first_token_log_prob``: of the
    first target token alone; ``first_token_is_top1``: whether the first target token is the
    model's top prediction after the prompt; ``token_accuracy``: the share of target tokens that
    are the top prediction given the prompt and the target tokens before them (teacher forcing).
    """

    log_prob: Float[Tensor, " batch"]
    first_token_log_prob: Float[Tensor, " batch"]
    first_token_is_top1: Bool[Tensor, " batch"]
    token_accuracy: Float[Tensor, " batch"]


@torch.no_grad()
def score_targets(model, tokenizer, prompts: Sequence[str], targets: Sequence[str],
                  batch_size: int = 256, prepend_bos: bool = True) -> TargetScores:
    """Score ``targets[i]`` after ``prompts[i]`` in padded batches of ``batch_size`` rows."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    pad = pad_id_of(tokenizer)
    log_probs, firsts, top1s, accuracies = [], [], [], []
    for begin in range(0, len(prompts), batch_size):
        prompt_ids = [encode_prompt(tokenizer, p, prepend_bos) for p in prompts[begin:begin + batch_size]]
        target_ids = [encode_target(tokenizer, t) for t in targets[begin:begin + batch_size]]
        tokens = pad_right([p + t for p, t in zip(prompt_ids, target_ids)], pad)
        logits = logits_of(model, tokens.to(_device_of(model))).float().log_softmax(-1).cpu()
        for row, (p, t) in enumerate(zip(prompt_ids, target_ids)):
            positions = torch.arange(len(p) - 1, len(p) + len(t) - 1)
            token_log_probs = logits[row, positions, torch.tensor(t)]
            log_probs.append(token_log_probs.sum())
            firsts.append(token_log_probs[0])
            hits = logits[row, positions].argmax(-1) == torch.tensor(t)
            top1s.append(hits[0])
            accuracies.append(hits.float().mean())
    return TargetScores(torch.stack(log_probs), torch.stack(firsts), torch.stack(top1s), torch.stack(accuracies))


@torch.no_grad()
def first_token_is_top1(model, tokenizer, prompts: Sequence[str], targets: Sequence[str],
                        batch_size: int = 256, prepend_bos: bool = True) -> Bool[Tensor, " batch"]:
    """Whether ``targets[i]``'s first token is the model's top prediction after ``prompts[i]``:
    ``score_targets(...).first_token_is_top1`` from the prompts alone, run shortest first so that
    batches carry little padding."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    encoded = [encode_prompt(tokenizer, p, prepend_bos) for p in prompts]
    firsts = torch.tensor([encode_target(tokenizer, t)[0] for t in targets], dtype=torch.long)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    hits = torch.zeros(len(encoded), dtype=torch.bool)
    for begin in range(0, len(order), batch_size):
        rows = order[begin:begin + batch_size]
        tokens = pad_right([encoded[i] for i in rows], pad_id_of(tokenizer)).to(_device_of(model))
        last = torch.tensor([len(encoded[i]) - 1 for i in rows], device=tokens.device)
        top = logits_of(model, tokens)[torch.arange(len(rows), device=tokens.device), last].argmax(-1).cpu()
        hits[rows] = top == firsts[rows]
    return hits


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def top_next_tokens(model, tokenizer, prompt: str, k: int = 5, prepend_bos: bool = True) -> list[tuple[str, float]]:
    """The ``k`` most probable next tokens after ``prompt``, as ``(text, probability)``."""
    tokens = torch.tensor([encode_prompt(tokenizer, prompt, prepend_bos)], device=_device_of(model))
    probs = logits_of(model, tokens)[0, -1].float().softmax(-1)
    top = probs.topk(k)
    return [(tokenizer.decode([i]), p) for p, i in zip(top.values.tolist(), top.indices.tolist())]
