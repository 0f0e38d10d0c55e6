"""Fine-tuning baselines (FT and FT-L): gradient steps on one MLP output weight, through hooks.

The weight change is a dense ``WeightDelta`` (key space, ``[d_mlp, d_model]``) optimised while it
is applied through the same hooks every edit uses, so the model's weights are never written (nor
given a gradient: ``frozen_weights``).
The loss is the negative log-likelihood of ``target_new`` after the edit prompt. FT-L clamps every
entry of the change to ``[-norm_constraint, norm_constraint]`` after each step.
"""

from __future__ import annotations

import time

import torch

from workbench.core.edit import Edit, EditRequest, WeightDelta, delta_hooks
from workbench.editing.hparams import FinetuneHparams
from workbench.editing.method import EditingMethod
from workbench.editing.target_loss import target_batch
from workbench.model.architecture import mlp_output_site
from workbench.model.frozen import frozen_weights


def compute_finetune_edit(model, request: EditRequest, hparams: FinetuneHparams) -> Edit:
    """The FT (or, with ``norm_constraint``, FT-L) edit of ``request`` at ``hparams.layer``."""
    started = time.perf_counter()
    site = mlp_output_site(model, hparams.layer)
    device = model.W_E.device
    batch = target_batch(model.tokenizer, [request.prompt], request.target_new, device)
    change = torch.zeros(model.cfg.d_mlp, model.cfg.d_model, device=device, requires_grad=True)
    delta = WeightDelta.dense(site, change)
    optimizer = torch.optim.Adam([change], lr=hparams.lr)
    losses = []
    with frozen_weights(model):
        for step in range(hparams.steps):
            with model.hooks(fwd_hooks=delta_hooks([delta])):
                nll = batch.nll(model(batch.tokens))
            if not torch.isfinite(nll):
                raise FloatingPointError(f"fine-tuning produced a loss of {nll.item()} at step {step}")
            losses.append(nll.item())
            if nll.item() < hparams.early_stop_nll:
                break
            optimizer.zero_grad()
            nll.backward()
            optimizer.step()
            if hparams.norm_constraint is not None:
                with torch.no_grad():
                    change.clamp_(-hparams.norm_constraint, hparams.norm_constraint)
    method = "ft" if hparams.norm_constraint is None else "ft-l"
    final = WeightDelta.dense(site, change.detach().cpu())
    return Edit(request, (final,), method=method, hparams=dict(vars(hparams)),
                timings={"total_s": time.perf_counter() - started, "losses": losses})


class Finetune(EditingMethod):
    """FT (``"ft"``) and FT-L (``"ft-l"``: with a ``norm_constraint``) behind the method protocol;
    nothing to prepare. FT-L's own default constraint is EasyEdit's for GPT-2 XL (5e-4)."""

    hparams_class = FinetuneHparams
    takes_layer = True
    DEFAULT_NORM_CONSTRAINTS = {"ft": None, "ft-l": 5e-4}

    def __init__(self, name: str):
        self.name = name
        self.main_hparams = ("steps", "lr") if self.DEFAULT_NORM_CONSTRAINTS[name] is None else (
            "steps", "lr", "norm_constraint")

    def default_hparams(self) -> FinetuneHparams:
        return FinetuneHparams(norm_constraint=self.DEFAULT_NORM_CONSTRAINTS[self.name])

    def compute(self, model, request: EditRequest, hparams: FinetuneHparams, prepared: None) -> Edit:
        return compute_finetune_edit(model, request, hparams)
