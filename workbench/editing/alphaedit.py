"""AlphaEdit (Fang et al. 2025): MEMIT's update projected onto the null space of the keys to keep.

The edit is MEMIT's (``workbench.editing.memit.compute_spread_edit``: the same target residuals,
the same range of layers, the same keys and the same residual spread over the range); only the
solve of each layer's update differs, as in the authors' ``AlphaEdit/AlphaEdit_main.py`` and
``experiments/evaluate.py`` (``get_project``):

- ``P``, per layer, projects onto the null space of ``C = E[k k^T]`` (``key_stats``): with
  ``C = U diag(S) U^T``, ``P = U_0 U_0^T`` over the eigenvectors whose eigenvalue is below
  ``nullspace_threshold``. Keys the model meets in its corpus lie (nearly) outside that space, so
  ``k^T P ~ 0`` for them and an update of the form ``P X`` leaves their outputs (nearly) unchanged.
- The update is ``dW = (P (K K^T + K_p K_p^T) + l2 I)^-1 P K R^T`` (key space ``[d_mlp, d_model]``;
  the paper's ``Delta P`` in the transposed layout), ``K`` the batch's keys at the layer, ``R`` the
  residual spread to it, ``l2 = l2_weight``, and ``K_p`` the keys of the earlier AlphaEdit edits of
  a sequence at that layer (the authors' ``cache_c``), which the update then also preserves.
  ``dW`` has the form ``P X``: ``P`` commutes with ``(P M + l2 I)^-1`` applied to ``P``'s range.

The earlier edits of a sequence reach the method through ``Editor``'s ``earlier`` argument:
``prepared_after`` sums ``K_p K_p^T`` from their ``Edit.update_keys`` (the keys each update was
written for, recorded as the update was computed; the authors recompute them after the update,
which gives the same keys, since a layer's keys depend only on the layers below it).

Remaining differences from the authors' code: those of MEMIT (``workbench.editing.memit``); the
eigendecomposition is ``torch.linalg.eigh`` of the symmetric ``C`` in float64 (the authors' SVD of
the float32 ``C`` gives the same basis); ``C`` is the workbench's own key statistic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.core.edit import Edit, EditRequest
from workbench.core.sites import EditSite
from workbench.editing.hparams import AlphaEditHparams
from workbench.editing.key_stats import KeyStatistics
from workbench.editing.memit import KeySolver, SpreadMethod, compute_spread_edit
from workbench.editing.method import Resources


def null_space_projection(moment: Float[Tensor, "d d"], threshold: float) -> Float[Tensor, "d d"]:
    """``P = U_0 U_0^T`` over the eigenvectors of the symmetric ``moment`` whose eigenvalue is below
    ``threshold`` (float64)."""
    values, vectors = torch.linalg.eigh(moment.double())
    kept = vectors[:, values < threshold]
    return kept @ kept.T


class NullSpaces:
    """AlphaEdit's prepared state for one model: ROME's key statistics and, per layer, the
    projection onto the null space of its key second moment (computed once per layer)."""

    def __init__(self, key_statistics: KeyStatistics, threshold: float):
        self.key_statistics, self.threshold = key_statistics, threshold
        self._projections: dict[int, Tensor] = {}

    def projection(self, layer: int) -> Float[Tensor, "d_mlp d_mlp"]:
        if layer not in self._projections:
            self._projections[layer] = null_space_projection(self.key_statistics.moment(layer), self.threshold)
        return self._projections[layer]

    def dimension(self, layer: int) -> int:
        """The dimension of the null space at ``layer`` (the trace of its projection)."""
        return round(self.projection(layer).trace().item())


@dataclass(frozen=True)
class AlphaEditState:
    """What an AlphaEdit edit is computed from: the null spaces and, per layer, ``K_p K_p^T`` of the
    keys of the earlier edits of the sequence (``[d_mlp, d_mlp]``, float64)."""

    null_spaces: NullSpaces
    earlier_keys: dict[int, Tensor] = field(default_factory=dict)


def alphaedit_solver(hparams: AlphaEditHparams, state: AlphaEditState) -> KeySolver:
    """``(P (K K^T + K_p K_p^T) + l2 I)^-1 P K`` at the site's layer (see the module docstring)."""
    def solve(site: EditSite, keys: Tensor) -> Tensor:
        projection = state.null_spaces.projection(site.layer).to(keys.device, torch.float64)
        preserved = keys.T @ keys
        if site.layer in state.earlier_keys:
            preserved = preserved + state.earlier_keys[site.layer].to(keys.device, torch.float64)
        identity = torch.eye(projection.shape[0], dtype=torch.float64, device=keys.device)
        return torch.linalg.solve(projection @ preserved + hparams.l2_weight * identity, projection @ keys.T)
    return solve


def compute_alphaedit_edit(model, requests: Sequence[EditRequest], hparams: AlphaEditHparams,
                           state: AlphaEditState) -> Edit:
    """The AlphaEdit edit of ``requests`` after the earlier edits ``state`` holds the keys of."""
    return compute_spread_edit(model, requests, hparams, state.null_spaces.key_statistics.texts(),
                               alphaedit_solver(hparams, state), "alphaedit")


class AlphaEdit(SpreadMethod):
    """AlphaEdit behind the method protocol."""

    name = "alphaedit"
    hparams_class = AlphaEditHparams
    main_hparams = ("span", "nullspace_threshold", "l2_weight", "v_steps", "v_lr", "clamp_norm_factor")

    def prepare(self, model, hparams: AlphaEditHparams, resources: Resources) -> AlphaEditState:
        statistics = KeyStatistics(model, resources.facts, resources.stats_corpus, hparams.key_stats_tokens)
        return AlphaEditState(NullSpaces(statistics, hparams.nullspace_threshold))

    def prepared_after(self, prepared: AlphaEditState, earlier: Sequence[Edit]) -> AlphaEditState:
        sums: dict[int, Tensor] = {}
        for edit in earlier:
            for layer, keys in edit.update_keys.items():
                keys = keys.double()
                sums[layer] = sums.get(layer, 0) + keys.T @ keys
        return dataclasses.replace(prepared, earlier_keys=sums)

    def compute_batch(self, model, requests: list[EditRequest], hparams: AlphaEditHparams,
                      prepared: AlphaEditState) -> Edit:
        return compute_alphaedit_edit(model, requests, hparams, prepared)
