"""ROME (Meng et al. 2022): a rank-one update of one MLP output weight, computed without touching it.

``compute_rome_edit(model, request, hparams, texts)`` returns an ``Edit`` and leaves the model
exactly as it found it: no weight is written, no gradient is computed for any weight (nor left in
``.grad``), every hook is scoped. Steps, as the authors' code (``rome/compute_u.py``,
``rome/compute_v.py``, ``rome/rome_main.py``) computes them:

1. ``k*``: the key (``blocks.L.mlp.hook_post``) at the subject's last token, averaged over the
   request prompt and short corpus prefixes followed by it; ``u = C^-1 k* / |C^-1 k*|`` with
   ``C = E[k k^T]`` from ``key_stats``.
2. ``v*``: a vector ``delta`` added to the MLP output at the subject's last token of every prompt
   of the batch (the prefixed edit prompts, each followed by the target less its last token, and
   the KL prompts) is optimised with Adam to minimise

       NLL + kl_factor * KL(edited || original) + v_weight_decay * |delta| / |o|^2

   where NLL is the new target's mean per-token negative log-likelihood over the prefixed prompts,
   KL compares the next-token distributions after the KL prompts with and without ``delta``, and
   ``o`` is the request prompt's original MLP output there. After each step ``delta`` is clamped to
   norm ``clamp_norm_factor * |o|``. The loop stops when the total loss falls below
   ``v_early_stop_loss`` or after ``v_steps`` forward passes (the last one only measures, so at
   most ``v_steps - 1`` updates). ``v* = o + delta``.
3. The update ``dW = u (v* - W k)^T / (k . u)``, with ``k`` the request prompt's own key, so that
   the edited weight maps ``k`` exactly to ``v*`` and changes least under ``C``.

Remaining differences from the authors' code and the paper:

- **KL position.** The authors' code reads the KL distribution at the subject's last token of
  "{subject} is a"; the paper (and this module) at the next token after it, where the prompt asks
  about the subject's kind.
- **Context prefixes.** The authors' code generates its prefixes with the model itself (text of 5
  and 10 tokens after a few fixed starts); here they are the first ``prefix_words`` words of
  ``n_prefixes`` texts drawn from the model's own corpus, with the same seed for every edit.
- **BOS.** Every prompt starts with the tokenizer's BOS token, as every document did in the
  workbench models' training (the authors' GPT-2 runs tokenise prompts without one); positions
  count it.
- **Key statistics.** ``C`` comes from the model's own corpus (``key_stats_tokens`` keys), not
  from Wikipedia text; ``C`` is a second moment, as the authors' ``mom2``.
- **Batch.** The authors' batch holds one row per prefix and one per KL prompt, like this one; the
  log-probabilities are computed only at the positions the loss reads (the same numbers, less
  work). The optimisation's forward passes run through the Hugging Face model on the bridge's
  weights (``ValueObjective``), as the authors' code runs, except while a caller's hooks are
  applied to the bridge.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.edit import Edit, EditRequest, WeightDelta
from workbench.core.sites import EditSite
from workbench.editing.hparams import RomeHparams
from workbench.editing.key_stats import KeyStatistics, key_second_moment
from workbench.editing.method import EditingMethod, Resources
from workbench.editing.target_loss import TargetBatch, target_batch
from workbench.model.architecture import mlp_output_site, plain_view
from workbench.model.frozen import frozen_weights
from workbench.model.hooks import active_hook_count
from workbench.model.tokens import encode_prompt, pad_id_of, pad_right, require_fits_context, subject_token_span


def context_prefixes(texts: Sequence[str], n: int, words: int, seed: int) -> list[str]:
    """``n`` prefixes: the first ``words`` words of randomly chosen corpus texts, ending with '. '."""
    rng = random.Random(seed)
    chosen = rng.sample(list(texts), min(n, len(texts)))
    return [" ".join(text.split()[:words]).rstrip(".") + ". " for text in chosen]


def _subject_last_positions(tokenizer, prompts: Sequence[str], subject: str) -> list[int]:
    return [subject_token_span(tokenizer, prompt, subject)[1] - 1 for prompt in prompts]


@torch.no_grad()
def keys_and_outputs(model, prompts: Sequence[str], subject: str, layer: int) -> tuple[Tensor, Tensor]:
    """Key ``[n, d_mlp]`` and MLP output ``[n, d_model]`` at the subject's last token of each prompt."""
    site = mlp_output_site(model, layer)
    tokenizer = model.tokenizer
    tokens = pad_right([encode_prompt(tokenizer, p) for p in prompts], pad_id_of(tokenizer)).to(model.W_E.device)
    positions = torch.tensor(_subject_last_positions(tokenizer, prompts, subject))
    _, cache = model.run_with_cache(tokens, names_filter=[site.key_hook, site.output_hook])
    rows = torch.arange(len(prompts))
    return cache[site.key_hook][rows, positions].cpu(), cache[site.output_hook][rows, positions].cpu()


@dataclass(frozen=True)
class ValueBatch:
    """The batch of ROME's value optimisation: ``targets``, the ``TargetBatch`` of the new target
    after each of the ``n_edit`` prefixed edit prompts, with the KL prompts as its other rows.

    ``lookup [batch]``: the subject's last token of each row, where ``delta`` is added;
    ``kl_positions [n_kl]``: the last token of each KL prompt.
    """

    targets: TargetBatch
    lookup: Int[Tensor, " batch"]
    kl_positions: Int[Tensor, " n_kl"]

    @property
    def tokens(self) -> Int[Tensor, "batch pos"]:
        return self.targets.tokens

    @property
    def n_edit(self) -> int:
        return self.targets.n_target


def value_batch(tokenizer, request: EditRequest, hparams: RomeHparams, prefixes: Sequence[str],
                device: torch.device | str) -> ValueBatch:
    """The ``ValueBatch`` of ``request`` with ``prefixes`` (see ``ValueBatch``)."""
    edit_prompts = [prefix + request.prompt for prefix in ["", *prefixes]]
    kl_prompts = [template.format(request.subject) for template in hparams.kl_prompts]
    targets = target_batch(tokenizer, edit_prompts, request.target_new, device, others=kl_prompts)
    lookup = _subject_last_positions(tokenizer, edit_prompts + kl_prompts, request.subject)
    kl_positions = [length - 1 for length in targets.lengths[len(edit_prompts):]]
    return ValueBatch(targets, torch.tensor(lookup, device=device), torch.tensor(kl_positions, device=device))


def read_losses(batch: ValueBatch, logits: Float[Tensor, "batch pos d_vocab"]) \
        -> tuple[Float[Tensor, "n_edit target"], Float[Tensor, "n_kl d_vocab"]]:
    """The target tokens' log-probabilities ``[n_edit, target]`` and the KL prompts' next-token
    log-distributions ``[n_kl, d_vocab]`` (log-softmax taken only where they are read)."""
    kl_rows = torch.arange(len(batch.kl_positions), device=logits.device)
    kl_log_probs = logits[batch.n_edit:][kl_rows, batch.kl_positions].float().log_softmax(-1)
    return batch.targets.log_probs(logits), kl_log_probs


def kl_from_original(edited: Float[Tensor, "n d_vocab"], original: Float[Tensor, "n d_vocab"]) -> Tensor:
    """KL(edited || original) of next-token log-distributions, summed over the vocabulary and
    averaged over the ``n`` prompts (the authors' ``kl_div(original, edited, log_target=True)``)."""
    return (edited.exp() * (edited - original)).sum(-1).mean()


def value_weight_decay(delta: Float[Tensor, " d_model"], original_output: Float[Tensor, " d_model"],
                       factor: float) -> Tensor:
    """``factor * |delta| / |original_output|^2``: the norm of the change, not its square, over the
    squared norm of the original output, as the authors' code computes it."""
    return factor * delta.norm() / original_output.norm() ** 2


class ValueObjective:
    """ROME's value loss as a function of ``delta`` (see the module docstring): one forward pass of
    the ``ValueBatch`` with ``delta`` added to the site's MLP output, then the three terms.

    The forward pass runs through ``plain_view(model)``, the Hugging Face model itself on the
    bridge's own weights, with a PyTorch hook on the site's module: as fast as Hugging Face alone.
    While hooks are applied to the bridge (a caller's edits, say) it runs through the bridge and
    its hooks instead, so that the edit is computed on the model as the caller sees it;
    ``through_bridge`` forces either way.
    """

    def __init__(self, model, site: EditSite, batch: ValueBatch, hparams: RomeHparams,
                 original_output: Float[Tensor, " d_model"], through_bridge: bool | None = None):
        self.model, self.site, self.batch, self.hparams = model, site, batch, hparams
        if through_bridge is None:
            through_bridge = active_hook_count(model) > 0
        self.plain = None if through_bridge else plain_view(model)
        self.original_output = original_output.to(batch.tokens.device)
        self._rows = torch.arange(len(batch.lookup), device=batch.tokens.device)
        with torch.no_grad():
            self.original_kl = read_losses(batch, self.logits(None))[1]

    def _add(self, output: Tensor, delta: Tensor | None) -> Tensor:
        if delta is None:
            return output
        return output.index_put((self._rows, self.batch.lookup), delta.to(output.dtype), accumulate=True)

    def logits(self, delta: Float[Tensor, " d_model"] | None) -> Float[Tensor, "batch pos d_vocab"]:
        """The batch's logits with ``delta`` added (None: the model as it is)."""
        if self.plain is None:
            with self.model.hooks(fwd_hooks=[(self.site.output_hook, lambda output, hook: self._add(output, delta))]):
                return self.model(self.batch.tokens)
        module = self.plain.get_submodule(self.site.module)
        handle = module.register_forward_hook(lambda module, inputs, output: self._add(output, delta))
        try:
            return self.plain(self.batch.tokens).logits
        finally:
            handle.remove()

    def __call__(self, delta: Float[Tensor, " d_model"]) -> tuple[Tensor, dict]:
        """``(loss, {"nll", "kl", "decay"})`` at ``delta``."""
        return self.loss_of(self.logits(delta), delta)

    def loss_of(self, logits: Float[Tensor, "batch pos d_vocab"], delta: Float[Tensor, " d_model"]) \
            -> tuple[Tensor, dict]:
        target_log_probs, kl_log_probs = read_losses(self.batch, logits)
        nll = -target_log_probs.mean()
        kl = kl_from_original(kl_log_probs, self.original_kl)
        decay = value_weight_decay(delta, self.original_output, self.hparams.v_weight_decay)
        loss = nll + self.hparams.kl_factor * kl + decay
        return loss, {"nll": nll.item(), "kl": kl.item(), "decay": decay.item()}


def optimise_value(model, request: EditRequest, hparams: RomeHparams, prefixes: Sequence[str],
                   original_output: Float[Tensor, " d_model"]) -> tuple[Tensor, dict]:
    """The vector ``delta`` that, added to the MLP output at the subject's last token, makes the
    prefixed prompts continue with ``request.target_new``. Returns it and the loss trace."""
    device = model.W_E.device
    batch = value_batch(model.tokenizer, request, hparams, prefixes, device)
    delta = torch.zeros(model.cfg.d_model, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=hparams.v_lr)
    max_norm = hparams.clamp_norm_factor * original_output.norm().item()
    losses = []
    with frozen_weights(model):
        objective = ValueObjective(model, mlp_output_site(model, hparams.layer), batch, hparams, original_output)
        for step in range(hparams.v_steps):
            loss, terms = objective(delta)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"ROME's value optimisation produced {loss.item()} at step {step}")
            losses.append(terms)
            if loss.item() < hparams.v_early_stop_loss or step == hparams.v_steps - 1:
                break
            optimizer.zero_grad()
            loss.backward()
            if step == 0 and (delta.grad is None or not delta.grad.any()):
                raise ValueError(f"the MLP output at the subject's last token in layer {hparams.layer} does not "
                                 "reach the prediction of the target (no later layer reads it): choose an earlier "
                                 "layer")
            optimizer.step()
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
    return delta.detach().cpu(), {"losses": losses}


def compute_rome_edit(model, request: EditRequest, hparams: RomeHparams, texts: Sequence[str],
                      progress: bool = False, moment: Tensor | None = None) -> Edit:
    """The ROME edit of ``request`` at ``hparams.layer`` (see the module docstring).

    ``moment`` is E[k k^T] of that layer; pass it when making many edits of one model, so that the
    key statistics (and the weight fingerprint that keys their cache) are not looked up each time.
    """
    started = time.perf_counter()
    site = mlp_output_site(model, hparams.layer)
    prefixes = context_prefixes(texts, hparams.n_prefixes, hparams.prefix_words, hparams.seed)
    require_fits_context(model, model.tokenizer, [prefix + request.prompt for prefix in ["", *prefixes]],
                         [request.target_new])
    if moment is None:
        moment = key_second_moment(model, hparams.layer, texts, hparams.key_stats_tokens, progress=progress)
    statistics_seconds = time.perf_counter() - started
    keys, outputs = keys_and_outputs(model, [prefix + request.prompt for prefix in ["", *prefixes]],
                                      request.subject, hparams.layer)
    device = model.W_E.device  # the update's linear algebra runs in float64 there, whatever the model's dtype
    own_key, own_output = keys[0].to(device, torch.float64), outputs[0].float()
    direction = torch.linalg.solve(moment.to(device, torch.float64), keys.mean(dim=0).to(device, torch.float64))
    direction = direction / direction.norm()
    value_change, trace = optimise_value(model, request, hparams, prefixes, own_output)
    target_value = own_output + value_change
    right = (target_value.to(device, torch.float64) - own_output.to(device, torch.float64)) / own_key.dot(direction)
    if not (torch.isfinite(direction).all() and torch.isfinite(right).all()):
        raise FloatingPointError("ROME's update is not finite (is the key statistic singular?)")
    delta = WeightDelta.rank_one(site, direction.float().cpu(), right.float().cpu())
    return Edit(request, (delta,), method="rome", hparams=dict(vars(hparams)),
                timings={"key_statistics_s": statistics_seconds, "total_s": time.perf_counter() - started,
                         "target_value": target_value.tolist(), **trace})


class Rome(EditingMethod):
    """ROME behind the method protocol: prepares the key statistics (``KeyStatistics``)."""

    name = "rome"
    hparams_class = RomeHparams
    takes_layer = True
    main_hparams = ("v_steps", "v_lr", "clamp_norm_factor", "kl_factor")

    def prepare(self, model, hparams: RomeHparams, resources: Resources) -> KeyStatistics:
        return KeyStatistics(model, resources.facts, resources.stats_corpus, hparams.key_stats_tokens)

    def compute(self, model, request: EditRequest, hparams: RomeHparams, prepared: KeyStatistics) -> Edit:
        return compute_rome_edit(model, request, hparams, prepared.texts(), moment=prepared.moment(hparams.layer))
