"""Edits as objects: weight deltas at MLP output sites, applied through hooks or committed.

Convention: a delta is stored in *key space*, ``delta[d_mlp, d_model]``, so that the edited MLP
output is ``key @ (W + delta)`` whatever the module's own layout (GPT-2's Conv1D keeps its weight
as ``[d_mlp, d_model]``, ``nn.Linear`` as ``[d_model, d_mlp]``; ``architecture.EditSite`` says which).
A rank-one delta is kept as its two factors, ``delta = outer(left, right)``.

Applying an edit through hooks reads the key at ``site.key_hook`` and adds ``key @ delta`` at
``site.output_hook`` in the same forward pass; the model's weights are never touched. Committing
writes the delta into the weights and returns a handle that restores them bit for bit.

A delta computed by an ``Editor`` carries ``base``, the digest of the weight it was computed
against (``stamped``). ``commit`` checks every delta of every edit (its site exists, its shape fits,
its base is the weight there now, unless ``allow_other_base``) before it writes anything, and
restores what it wrote if writing fails. A handle reverts only while its weights are as its commit
left them: a later commit of the same weights must be reverted first (last in, first out), so no
revert ever undoes another commit's change.

An in-context edit (IKE) has no deltas but a ``context``: text put before every prompt the edited
model is asked (``Edit.prompt_for``). Code that runs prompts through an edit uses both
``edit.applied(model)`` and ``edit.prompt_for(prompt)``, so every method works the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.core.fingerprint import tensor_digest
from workbench.core.sites import EditSite, site_module


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
        for name in ("prompt", "subject", "target_new", "ground_truth"):
            value = getattr(self, name)
            if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):  # undecodable bytes
                raise ValueError(f"{name} {value!r} is not valid text (bytes that are not UTF-8?)")
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
    base: str | None = None  # tensor_digest of the weight it was computed against; None: not recorded

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
        return (key @ self.left.to(key.device, key.dtype)) @ self.right.to(key.device, key.dtype)


@dataclass(frozen=True)
class Edit:
    """The result of an editing method: its deltas (or its prompt ``context``), the request,
    hyperparameters, timings and method-specific ``details`` (for IKE: the demonstrations used).
    ``update_keys``: ``{layer: [n, d_mlp]}``, the keys the update at each layer was written for
    (MEMIT and AlphaEdit keep them; AlphaEdit preserves the earlier edits' keys of a sequence)."""

    request: EditRequest
    deltas: tuple[WeightDelta, ...]
    method: str
    hparams: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    context: str = ""
    details: dict = field(default_factory=dict)
    update_keys: dict[int, Tensor] = field(default_factory=dict, repr=False)

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


def merged_edit(edits: Sequence[Edit]) -> Edit:
    """One edit that acts as ``edits`` applied together: one dense delta per site, the sum of the
    edits' deltas there (so that hooks stay as few as the sites however many edits there are), and
    every edit's ``update_keys`` stacked per layer. Its request is the last edit's; ``details``
    counts the edits (``n_edits``; a merged edit counts as the edits it holds). A delta keeps its
    ``base`` when every edit's delta at the site has the same."""
    if not edits:
        raise ValueError("there are no edits to merge")
    require_weight_edits(edits)
    sums: dict[EditSite, Tensor] = {}
    bases: dict[EditSite, set] = {}
    keys: dict[int, list[Tensor]] = {}
    for edit in edits:
        for delta in edit.deltas:
            sums[delta.site] = sums.get(delta.site, 0) + delta.matrix().float()
            bases.setdefault(delta.site, set()).add(delta.base)
        for layer, layer_keys in edit.update_keys.items():
            keys.setdefault(layer, []).append(layer_keys)
    deltas = tuple(dataclasses.replace(WeightDelta.dense(site, total),
                                       base=next(iter(bases[site])) if len(bases[site]) == 1 else None)
                   for site, total in sums.items())
    methods = sorted({edit.method for edit in edits})
    n_edits = sum(edit.details.get("n_edits", 1) for edit in edits)
    return Edit(edits[-1].request, deltas, "+".join(methods), details={"n_edits": n_edits},
                update_keys={layer: torch.cat(parts) for layer, parts in keys.items()})


def stamped(edit: Edit, model) -> Edit:
    """``edit`` with every delta's ``base`` set to the digest of its site's weight in ``model`` now."""
    deltas = tuple(dataclasses.replace(delta, base=tensor_digest(site_module(model, delta.site).weight))
                   for delta in edit.deltas)
    return dataclasses.replace(edit, deltas=deltas)


def checked_weights(edits: Sequence[Edit], weight_of: Callable[[EditSite], Tensor],
                    allow_other_base: bool = False) -> list[tuple[Tensor, WeightDelta]]:
    """Every delta of ``edits`` with its weight (``weight_of(site)``), in order, once each delta is
    known to fit: its site exists, its shape is the weight's in key space, and its ``base`` (when
    recorded) is the weight's digest now, unless ``allow_other_base``. Raises ValueError naming the
    edit and the site otherwise; nothing is written here."""
    require_weight_edits(edits)
    checked = []
    for edit in edits:
        for delta in edit.deltas:
            what = f"the {edit.method} edit of {edit.request.prompt!r} at {delta.site.module}"
            try:
                weight = weight_of(delta.site)
            except AttributeError:
                raise ValueError(f"{what}: this model has no such module (was it computed on another "
                                 "model?)") from None
            shape = tuple(weight.shape) if delta.site.orientation == "in out" else tuple(weight.shape)[::-1]
            if (delta.left.shape[0], delta.right.shape[1]) != shape:
                raise ValueError(f"{what}: a change of shape {(delta.left.shape[0], delta.right.shape[1])} does not "
                                 f"fit the weight there ({shape} in key space)")
            if delta.base and not allow_other_base and tensor_digest(weight) != delta.base:
                raise ValueError(f"{what} was computed for other weights there (digest {delta.base}, this model "
                                 f"has {tensor_digest(weight)}); allow_other_base=True writes it anyway")
            checked.append((weight, delta))
    return checked


class CommittedEdits:
    """Handle returned by ``commit``: ``revert()`` restores the weights it changed bit for bit,
    provided they are still as the commit left them (see the module docstring)."""

    def __init__(self, originals: list[tuple[torch.nn.Parameter, Tensor]]):
        self._originals = originals
        self._after = {id(parameter): (parameter, parameter.detach().clone()) for parameter, _ in originals}

    @property
    def reverted(self) -> bool:
        return not self._originals

    @torch.no_grad()
    def revert(self) -> None:
        changed = [parameter for parameter, after in self._after.values() if not torch.equal(parameter, after)]
        if changed:
            raise ValueError(f"{len(changed)} of the weights this commit wrote have changed since (a later commit, "
                             "or a write of its own): revert the later commits first; nothing was restored")
        _restore(self._originals)
        self._originals, self._after = [], {}


@torch.no_grad()
def _restore(originals: list[tuple[torch.nn.Parameter, Tensor]]) -> None:
    for parameter, original in reversed(originals):
        parameter.copy_(original)


@torch.no_grad()
def commit(model, edits: Sequence[Edit], allow_other_base: bool = False) -> CommittedEdits:
    """Write the edits' deltas into the model's weights (explicit, reversible), all or nothing:
    every delta is checked first (``checked_weights``), and a failure while writing restores what
    was written."""
    checked = checked_weights(edits, lambda site: site_module(model, site).weight, allow_other_base)
    originals: list[tuple[torch.nn.Parameter, Tensor]] = []
    try:
        for weight, delta in checked:
            originals.append((weight, weight.detach().clone()))
            add_to_weight(weight, delta)
    except BaseException:
        _restore(originals)
        raise
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
