"""The loss every editing method optimises or differentiates: the new target's negative
log-likelihood after a prompt, teacher-forced.

A ``TargetBatch`` holds ``n_target`` rows, each a prompt followed by the target less its last
token, then any ``others`` rows (texts measured otherwise: ROME's KL prompts, MEND's locality
statements), right-padded into one batch. ``positions[row, j]`` is the position whose next token
is the target's ``j``-th, so ``log_probs`` reads the target's log-probability at every one of its
tokens given the prompt and the target tokens before it; ``nll`` is their mean over rows and
tokens (the loss of ROME's value optimisation, FT's and MEND's edit loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.model.tokens import encode_prompt, encode_target, pad_id_of, pad_right


@dataclass(frozen=True)
class TargetBatch:
    """``tokens [batch pos]``: the target rows, then the other rows; ``positions [n_target target]``;
    ``target_ids [target]``; ``lengths``: every row's length before padding."""

    tokens: Int[Tensor, "batch pos"]
    positions: Int[Tensor, "n_target target"]
    target_ids: Int[Tensor, " target"]
    lengths: tuple[int, ...]

    @property
    def n_target(self) -> int:
        return self.positions.shape[0]

    def log_probs(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, "n_target target"]:
        """The target tokens' log-probabilities in the target rows (log-softmax in fp32, taken only
        where it is read)."""
        rows = torch.arange(self.n_target, device=logits.device).unsqueeze(1)
        read = logits[:self.n_target][rows, self.positions].float()
        ids = self.target_ids.expand(self.n_target, -1).unsqueeze(-1)
        return read.log_softmax(-1).gather(-1, ids).squeeze(-1)

    def nll(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
        """The target's mean negative log-likelihood over the target rows and tokens."""
        return -self.log_probs(logits).mean()


def target_batch(tokenizer, prompts: Sequence[str], target: str, device: torch.device | str,
                 others: Sequence[str] = ()) -> TargetBatch:
    """The ``TargetBatch`` of ``target`` after each of ``prompts`` (encoded with BOS where the
    tokenizer has one), with ``others`` as further rows."""
    target_ids = encode_target(tokenizer, target)
    prompt_ids = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    rows = [ids + target_ids[:-1] for ids in prompt_ids] + [encode_prompt(tokenizer, text) for text in others]
    positions = [[len(ids) - 1 + j for j in range(len(target_ids))] for ids in prompt_ids]
    return TargetBatch(pad_right(rows, pad_id_of(tokenizer)).to(device), torch.tensor(positions, device=device),
                       torch.tensor(target_ids, device=device), tuple(len(row) for row in rows))
