"""Edits as objects: weight deltas at MLP output sites, applied through hooks or committed.

Convention: a delta is stored in *key space*, ``delta[d_mlp, d_model]``, so that the edited MLP
output is ``key @ (W + delta)`` whatever the module's own layout (GPT-2's Conv1D keeps its weight
as ``[d_mlp, d_model]``, ``nn.Linear`` as ``[d_model, d_mlp]``; ``architecture.EditSite`` says which).
A rank-one delta is kept as its two factors, ``delta = outer(left, right)``.

Applying an edit through hooks reads the key at ``site.key_hook`` and adds ``key @ delta`` at
``site.output_hook`` in the same forward pass; the model's weights are never touched. Committing
writes the delta into the weights and returns a handle that restores them bit for bit.

An in-context edit (IKE) has no deltas but a ``context``: text put before every prompt the edited
model is asked (``Edit.prompt_for``). Code that runs prompts through an edit uses both
``edit.applied(model)`` and ``edit.prompt_for(prompt)``, so every method works the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.model.architecture import EditSite, site_module


@dataclass(frozen=True)
class EditRequest:
    """Change what ``prompt`` (which contains ``subject``) continues with to ``target_new``."""

    prompt: str
    subject: str
    target_new: str
    ground_truth: str | None = None

    def __post_init__(self):
        for name in ("prompt", "subject", "target_new"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.subject.strip() not in self.prompt:
            raise ValueError(f"subject {self.subject!r} does not occur in prompt {self.prompt!r}")
        if self.ground_truth is not None and self.ground_truth.strip() == self.target_new.strip():
            raise ValueError(f"target_new {self.target_new!r} equals the current answer: nothing to edit")


@dataclass(frozen=True)
class WeightDelta:
    """A change of one site's weight in key space (``[d_in, d_out]``: ``[d_mlp, d_model]`` for an MLP
    output projection, ``[d_model, d_mlp]`` for an input projection)."""

    site: EditSite
    left: Float[Tensor, "d_in rank"]
    right: Float[Tensor, "rank d_out"]

    @classmethod
    def rank_one(cls, site: EditSite, key_direction: Tensor, value: Tensor) -> WeightDelta:
        """``delta = outer(key_direction, value)``: keys along ``key_direction`` gain ``value``."""
        return cls(site, key_direction.reshape(-1, 1), value.reshape(1, -1))

    @classmethod
    def dense(cls, site: EditSite, delta: Float[Tensor, "in out"]) -> WeightDelta:
        return cls(site, delta, torch.eye(delta.shape[1], dtype=delta.dtype, device=delta.device))

    def matrix(self) -> Float[Tensor, "in out"]:
        return self.left @ self.right

    def output_change(self, key: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return (key @ self.left.to(key.dtype)) @ self.right.to(key.dtype)


@dataclass(frozen=True)
class Edit:
    """The result of an editing method: its deltas (or its prompt ``context``), the request,
    hyperparameters, timings and method-specific ``details`` (for IKE: the demonstrations used)."""

    request: EditRequest
    deltas: tuple[WeightDelta, ...]
    method: str
    hparams: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    context: str = ""
    details: dict = field(default_factory=dict)

    def prompt_for(self, prompt: str) -> str:
        """``prompt`` as the edited model is asked it: after the edit's context, if any."""
        return self.context + prompt

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers whose MLP output weight the edit changes."""
        return tuple(delta.site.layer for delta in self.deltas)

    def hooks(self) -> list[tuple[str, callable]]:
        return delta_hooks(self.deltas)

    @contextmanager
    def applied(self, model) -> Iterator[None]:
        """Inside the block the model behaves as edited; its weights are never written."""
        with applied_edits(model, [self]):
            yield


def delta_hooks(deltas: Sequence[WeightDelta]) -> list[tuple[str, callable]]:
    """Forward hooks that add every delta's effect to its site's output."""
    hooks = []
    for delta in deltas:
        captured: dict[str, Tensor] = {}

        def read_key(key, hook, captured=captured):
            captured["key"] = key
            return key

        def add_change(output, hook, captured=captured, delta=delta):
            return output + delta.output_change(captured.pop("key")).to(output.dtype)

        hooks += [(delta.site.key_hook, read_key), (delta.site.output_hook, add_change)]
    return hooks


@contextmanager
def applied_edits(model, edits: Sequence[Edit]) -> Iterator[None]:
    """Apply several edits together through hooks (they compose: their deltas add up)."""
    with model.hooks(fwd_hooks=[hook for edit in edits for hook in edit.hooks()]):
        yield


class CommittedEdits:
    """Handle returned by ``commit``: ``revert()`` restores the original weights bit for bit."""

    def __init__(self, originals: list[tuple[torch.nn.Parameter, Tensor]]):
        self._originals = originals

    @property
    def reverted(self) -> bool:
        return not self._originals

    @torch.no_grad()
    def revert(self) -> None:
        for parameter, original in reversed(self._originals):
            parameter.copy_(original)
        self._originals = []


@torch.no_grad()
def commit(model, edits: Sequence[Edit]) -> CommittedEdits:
    """Write the edits' deltas into the model's weights (explicit, reversible)."""
    require_weight_edits(edits)
    originals: list[tuple[torch.nn.Parameter, Tensor]] = []
    for edit in edits:
        for delta in edit.deltas:
            weight = site_module(model, delta.site).weight
            originals.append((weight, weight.detach().clone()))
            add_to_weight(weight, delta)
    return CommittedEdits(originals)


def require_weight_edits(edits: Sequence[Edit]) -> None:
    """Refuse in-context edits where weights are to be written: they change prompts, not weights."""
    for edit in edits:
        if edit.context:
            raise ValueError(f"the {edit.method} edit of {edit.request.prompt!r} works in context (a prompt "
                             "prefix), not on weights: it cannot be committed or exported")


@torch.no_grad()
def add_to_weight(weight: torch.nn.Parameter, delta: WeightDelta) -> None:
    """``weight += delta`` in the weight's own layout (``delta.site.orientation``)."""
    change = delta.matrix().to(device=weight.device, dtype=weight.dtype)
    weight.add_(change if delta.site.orientation == "in out" else change.T)
