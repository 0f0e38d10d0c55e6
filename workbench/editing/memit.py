"""MEMIT (Meng et al. 2023): many requests edited together, spread over several MLP output weights.

``compute_memit_edit(model, requests, hparams, key_statistics)`` returns one ``Edit`` holding one
delta per layer of ``hparams.layers()`` and leaves the model exactly as it found it (the updates of
earlier layers are applied through hooks while later layers are computed). Steps, as the authors'
code (``memit/memit_main.py``, ``memit/compute_z.py``, ``memit/compute_ks.py``) computes them:

1. ``z_i`` for each request: the residual stream (``blocks.L.hook_resid_post``) at the subject's
   last token of the request prompt, at the last layer ``L`` of the range, plus the ``delta`` that
   ROME's value optimisation finds there (``rome.optimise_value``: the same loss, the same Adam
   steps, the same prefixed prompts and KL prompts), with the weight decay and the norm clamp
   measured against that residual, as the authors' ``compute_z`` measures them against its
   ``target_init``. Adding ``delta`` to the MLP output of layer ``L`` is adding it to the residual
   after that MLP, so the optimisation is the authors' own.
2. For each layer ``l_j`` of the range in turn, with the updates of the earlier layers applied:
   ``K [d_mlp, B]``, each request's key at ``l_j`` averaged over the request prompt and the corpus
   prefixes (``compute_ks``); the residual still missing at ``L``, ``R = (Z - z_now) / (layers
   left)``, spread over the remaining layers; the update
   ``dW = (lambda C + K K^T)^-1 K R^T`` in key space, with ``C = E[k k^T]`` of layer ``l_j``
   (``key_stats``) and ``lambda = mom2_update_weight``, solved in float64 on the model's device.

``compute_spread_edit`` is that loop, shared with AlphaEdit (``workbench.editing.alphaedit``), which
differs only in how a layer's update is solved (a ``KeySolver``; MEMIT's is ``memit_solver``). The
keys each layer's update was written for are kept in ``Edit.update_keys``.

For one request and one layer, Sherman-Morrison gives ``dW = C^-1 k (z - z_now)^T / (lambda +
k^T C^-1 k)``: ROME's update scaled by ``s / (lambda + s)``, ``s = k^T C^-1 k`` (the paper's
identity; ``tests/test_memit.py`` checks it).

Remaining differences from the authors' code: those of ROME's value optimisation (the KL position,
corpus prefixes instead of generated ones, BOS; ``workbench.editing.rome``); the keys of a layer
are averaged over the request prompt and the prefixes of the value optimisation (the authors'
``compute_ks`` uses its own generated contexts); ``C`` is the workbench's own key statistic
(``key_stats_tokens`` keys of the model's corpus); the layers are named by their last one and a
span (the authors list them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from workbench.core.edit import Edit, EditRequest, WeightDelta, applied_edits
from workbench.core.sites import EditSite, stream_hook
from workbench.editing.hparams import MemitHparams, RomeHparams, SpreadHparams
from workbench.editing.key_stats import KeyStatistics
from workbench.editing.method import EditingMethod, Resources
from workbench.editing.rome import context_prefixes, keys_and_outputs, optimise_value
from workbench.model.architecture import mlp_output_site
from workbench.model.tokens import encode_prompt, pad_id_of, pad_right, require_fits_context, subject_token_span


def check_batch(requests: Sequence[EditRequest]) -> None:
    """Refuse an empty batch, and two requests of one prompt and subject with different targets."""
    if not requests:
        raise ValueError("a batch edit needs at least one request")
    targets: dict[tuple[str, str], str] = {}
    for request in requests:
        key = (request.prompt, request.subject)
        if targets.setdefault(key, request.target_new) != request.target_new:
            raise ValueError(f"two requests contradict each other: {request.prompt!r} (subject {request.subject!r}) "
                             f"-> {targets[key]!r} and -> {request.target_new!r}")


@torch.no_grad()
def residuals_at_subjects(model, requests: Sequence[EditRequest], layer: int) -> Tensor:
    """``[B, d_model]``: the residual stream after ``layer`` at each request prompt's subject's last token."""
    tokenizer = model.tokenizer
    tokens = pad_right([encode_prompt(tokenizer, r.prompt) for r in requests], pad_id_of(tokenizer))
    positions = [subject_token_span(tokenizer, r.prompt, r.subject)[1] - 1 for r in requests]
    hook = stream_hook("resid", layer)
    _, cache = model.run_with_cache(tokens.to(model.W_E.device), names_filter=[hook])
    return cache[hook][torch.arange(len(requests)), positions].float().cpu()


def mean_keys(model, requests: Sequence[EditRequest], prefixes: Sequence[str], layer: int) -> Tensor:
    """``[B, d_mlp]``: each request's key at ``layer``, averaged over its prompt and the prefixed prompts."""
    return torch.stack([keys_and_outputs(model, [prefix + r.prompt for prefix in ["", *prefixes]], r.subject,
                                         layer)[0].float().mean(dim=0) for r in requests])


def value_hparams(hparams: SpreadHparams) -> RomeHparams:
    """ROME's hyperparameters of the value optimisation at the range's last layer."""
    return RomeHparams(**{field.name: getattr(hparams, field.name) for field in dataclasses.fields(RomeHparams)})


KeySolver = Callable[[EditSite, Tensor], Tensor]
"""``(site, keys [B, d_mlp] float64) -> [d_mlp, B]``: the key-side factor of a layer's update, which
is that factor times the residual spread to the layer (``[B, d_model]``)."""


def memit_solver(hparams: MemitHparams, key_statistics: KeyStatistics) -> KeySolver:
    """MEMIT's ``(lambda C + K K^T)^-1 K``, ``lambda = mom2_update_weight``, ``C = E[k k^T]``."""
    def solve(site: EditSite, keys: Tensor) -> Tensor:
        moment = key_statistics.moment(site.layer).to(keys.device, torch.float64)
        return torch.linalg.solve(hparams.mom2_update_weight * moment + keys.T @ keys, keys.T)
    return solve


def compute_spread_edit(model, requests: Sequence[EditRequest], hparams: SpreadHparams, texts: Sequence[str],
                        solve: KeySolver, method: str) -> Edit:
    """The edit of ``requests`` spread over ``hparams.layers()`` (steps 1 and 2 of the module
    docstring), each layer's update factored by ``solve``. ``update_keys`` holds, per layer, the
    keys its update was written for; ``details["requests"]`` lists the requests of a batch."""
    started = time.perf_counter()
    check_batch(requests)
    if hparams.layer is None:
        raise ValueError(f"{method} needs a layer: the last layer of the range it edits")
    sites = [mlp_output_site(model, layer) for layer in hparams.layers()]  # refuses a layer out of range
    prefixes = context_prefixes(texts, hparams.n_prefixes, hparams.prefix_words, hparams.seed)
    for request in requests:
        require_fits_context(model, model.tokenizer, [prefix + request.prompt for prefix in ["", *prefixes]],
                             [request.target_new])
    device = model.W_E.device
    initial = residuals_at_subjects(model, requests, hparams.layer)
    changes = [optimise_value(model, request, value_hparams(hparams), prefixes, initial[index])[0]
               for index, request in enumerate(requests)]
    targets = initial + torch.stack(changes).float()
    deltas: list[WeightDelta] = []
    update_keys: dict[int, Tensor] = {}
    for position, site in enumerate(sites):
        with applied_edits(model, [Edit(requests[0], tuple(deltas), method)]):
            keys = mean_keys(model, requests, prefixes, site.layer).to(device, torch.float64)
            missing = (targets - residuals_at_subjects(model, requests, hparams.layer)).to(device, torch.float64)
        spread = missing / (len(sites) - position)
        factor = solve(site, keys)
        if not (torch.isfinite(factor).all() and torch.isfinite(spread).all()):
            raise FloatingPointError(f"{method}'s update at layer {site.layer} is not finite")
        deltas.append(WeightDelta(site, factor.float().cpu(), spread.float().cpu()))
        update_keys[site.layer] = keys.float().cpu()
    return Edit(requests[0], tuple(deltas), method=method, hparams=dict(vars(hparams)),
                timings={"total_s": time.perf_counter() - started}, update_keys=update_keys,
                details={"requests": [dataclasses.asdict(r) for r in requests]} if len(requests) > 1 else {})


def spread_layers(hparams: SpreadHparams) -> str:
    """The edited layers of a spread edit, for tables: ``first-last``, or the one layer."""
    layers = hparams.layers() if hparams.layer is not None else ()
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(hparams.layer)


def compute_memit_edit(model, requests: Sequence[EditRequest], hparams: MemitHparams,
                       key_statistics: KeyStatistics) -> Edit:
    """The MEMIT edit of ``requests`` (see the module docstring)."""
    return compute_spread_edit(model, requests, hparams, key_statistics.texts(),
                               memit_solver(hparams, key_statistics), "memit")


class SpreadMethod(EditingMethod):
    """A method whose edit is spread over a range of layers and solved for a batch of requests at
    once (MEMIT, AlphaEdit): one request is a batch of one."""

    takes_layer = True
    edits_batches = True

    def compute(self, model, request: EditRequest, hparams: SpreadHparams, prepared) -> Edit:
        return self.compute_batch(model, [request], hparams, prepared)

    def edited_layers(self, hparams: SpreadHparams, n_layers: int) -> str:
        return spread_layers(hparams)


class Memit(SpreadMethod):
    """MEMIT behind the method protocol: the key statistics of ROME (``KeyStatistics``)."""

    name = "memit"
    hparams_class = MemitHparams
    main_hparams = ("span", "mom2_update_weight", "v_steps", "v_lr", "clamp_norm_factor")

    def prepare(self, model, hparams: MemitHparams, resources: Resources) -> KeyStatistics:
        return KeyStatistics(model, resources.facts, resources.stats_corpus, hparams.key_stats_tokens)

    def compute_batch(self, model, requests: list[EditRequest], hparams: MemitHparams,
                      prepared: KeyStatistics) -> Edit:
        return compute_memit_edit(model, requests, hparams, prepared)
