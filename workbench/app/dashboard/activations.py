"""How an edit changes the model's activations on a prompt, and what it does at its edit sites.

Conventions:

- ``activation_change`` compares two runs of one prompt: the model with ``base_edits`` applied
  (a session's earlier edits; none for the plain model) and the same with the new edit added. An
  in-context edit is run on ``edit.prompt_for(prompt)``, its context in front; its rows are the
  tokens at the end of the prompt that both tokenisations share (a first token that merges with
  the context's trailing space is left out). Rows are the prompt's tokens without BOS, columns
  layers; a cell is the L2 norm of the difference at ``blocks.L.hook_resid_post`` (``resid``) or
  ``blocks.L.hook_mlp_out`` (``mlp``).
- ``site_changes`` reads, per edited weight, the key (the MLP output projection's input) and the
  value (its output) at the subject's last token, before and after the edit, and the size of the
  weight change (Frobenius norms, and the change's numerical rank).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from workbench.core.edit import Edit, applied_edits
from workbench.core.plotting import plt
from workbench.core.sites import site_module, stream_hook
from workbench.model.tokens import encode_prompt, subject_token_span

CHANGE_KINDS = ("resid", "mlp")
CHANGE_TITLES = {"resid": "change of the residual stream", "mlp": "change of the MLP output"}


@dataclass(frozen=True)
class ActivationChange:
    """``changes[kind][token, layer]``: the norm of edited minus unedited activation."""

    tokens: list[str]
    changes: dict[str, np.ndarray]


@dataclass(frozen=True)
class SiteChange:
    """One edited MLP output weight: its layer, the weight's and its change's norms, the change's
    numerical rank, and at the subject's last token the key ``[d_mlp]`` and the value ``[d_model]``
    before and after the edit."""

    layer: int
    weight_norm: float
    weight_change_norm: float
    rank: int
    key: np.ndarray
    value_before: np.ndarray
    value_after: np.ndarray

    @property
    def value_change_norm(self) -> float:
        return float(np.linalg.norm(self.value_after - self.value_before))


def _cached(model, tokens: list[int], names: list[str], edits: Sequence[Edit]) -> dict[str, torch.Tensor]:
    with torch.no_grad(), applied_edits(model, edits):
        _, cache = model.run_with_cache(torch.tensor([tokens], device=model.W_E.device), names_filter=names)
    return {name: cache[name][0].float().cpu() for name in names}


def shared_suffix_length(tokens: Sequence[int], other: Sequence[int]) -> int:
    """How many tokens at the end of ``tokens`` equal those at the end of ``other``."""
    n = 0
    while n < min(len(tokens), len(other)) and tokens[-1 - n] == other[-1 - n]:
        n += 1
    return n


def activation_change(model, prompt: str, edit: Edit, base_edits: Sequence[Edit] = ()) -> ActivationChange:
    """The per-layer, per-token change that ``edit`` makes on ``prompt`` (see the module docstring)."""
    tokenizer = model.tokenizer
    plain = encode_prompt(tokenizer, prompt)
    edited = encode_prompt(tokenizer, edit.prompt_for(prompt))
    n = shared_suffix_length(plain[1:] if tokenizer.bos_token_id is not None else plain, edited)
    if n == 0:
        raise ValueError("the edit's context changes how every token of the prompt is tokenised: nothing to align")
    names = [stream_hook(kind, layer) for kind in CHANGE_KINDS for layer in range(model.cfg.n_layers)]
    before = _cached(model, plain, names, base_edits)
    after = _cached(model, edited, names, [*base_edits, edit])
    changes = {}
    for kind in CHANGE_KINDS:
        columns = [(after[stream_hook(kind, layer)][-n:] - before[stream_hook(kind, layer)][-n:]).norm(dim=-1)
                   for layer in range(model.cfg.n_layers)]
        changes[kind] = torch.stack(columns, dim=1).numpy()
    return ActivationChange([tokenizer.decode([t]) for t in plain[-n:]], changes)


def site_changes(model, edit: Edit, base_edits: Sequence[Edit] = ()) -> list[SiteChange]:
    """Key, value and weight change at each site ``edit`` changes (none for an in-context edit)."""
    request = edit.request
    tokens = encode_prompt(model.tokenizer, request.prompt)
    position = subject_token_span(model.tokenizer, request.prompt, request.subject)[1] - 1
    names = [name for delta in edit.deltas for name in (delta.site.key_hook, delta.site.output_hook)]
    before = _cached(model, tokens, names, base_edits)
    after = _cached(model, tokens, names, [*base_edits, edit])
    sites = []
    for delta in edit.deltas:
        weight, change = site_module(model, delta.site).weight, delta.matrix().detach().float()
        sites.append(SiteChange(
            delta.site.layer, weight.detach().float().norm().item(), change.norm().item(),
            int(torch.linalg.matrix_rank(change)), before[delta.site.key_hook][position].numpy(),
            before[delta.site.output_hook][position].numpy(), after[delta.site.output_hook][position].numpy()))
    return sites


def activation_change_figure(change: ActivationChange, title: str = "") -> Figure:
    """Two heatmaps, tokens x layers: the residual stream's and the MLP outputs' change."""
    figure, axes = plt.subplots(1, len(change.changes), figsize=(3.6 * len(change.changes),
                                                                 0.32 * len(change.tokens) + 1.6), squeeze=False)
    for axis, (kind, grid) in zip(axes[0], change.changes.items()):
        image = axis.imshow(grid, cmap="Oranges", aspect="auto", vmin=0)
        axis.set_yticks(range(len(change.tokens)),
                        [repr(t) for t in change.tokens] if axis is axes[0][0] else [""] * len(change.tokens))
        axis.set_xlabel("layer")
        axis.set_title(f"{CHANGE_TITLES[kind]}\n(L2 norm, edited − unedited)", fontsize=9)
        figure.colorbar(image, ax=axis)
    if title:
        figure.suptitle(title, y=1.02, fontsize=9)
    return figure


def site_figure(site: SiteChange) -> Figure:
    """The key at the edit site, and the value before and after the edit, entry by entry."""
    figure, (key_axis, value_axis) = plt.subplots(1, 2, figsize=(9, 2.6))
    key_axis.plot(site.key, linewidth=0.7)
    key_axis.set_title(f"layer {site.layer}: key (MLP hidden activation), ‖k‖ {np.linalg.norm(site.key):.2f}",
                       fontsize=9)
    key_axis.set_xlabel("d_mlp index")
    value_axis.plot(site.value_before, linewidth=0.7, label="before")
    value_axis.plot(site.value_after, linewidth=0.7, label="after")
    value_axis.set_title(f"value (MLP output), ‖Δv‖ {site.value_change_norm:.2f}", fontsize=9)
    value_axis.set_xlabel("d_model index")
    value_axis.legend(fontsize=7)
    return figure
