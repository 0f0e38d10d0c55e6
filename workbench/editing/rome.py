"""ROME (Meng et al. 2022): a rank-one update of one MLP output weight, computed without touching it.

``compute_rome_edit(model, request, hparams, texts)`` returns an ``Edit`` and leaves the model
exactly as it found it (no weight is written; every hook is scoped). Steps, as in the reference
implementation:

1. ``k*``: the key (``blocks.L.mlp.hook_post``) at the subject's last token, averaged over the
   request prompt and short corpus prefixes followed by it; ``u = C^-1 k* / |C^-1 k*|`` with
   ``C = E[k k^T]`` from ``key_stats``.
2. ``v*``: a vector added to the MLP output at the subject's last token in every prefixed prompt
   is optimised so that they continue with the new target (see ``RomeHparams``); ``v*`` is the
   request prompt's original MLP output there plus that vector.
3. The update ``dW = u (v* - W k)^T / (k . u)``, with ``k`` the request prompt's own key, so that
   the edited weight maps ``k`` exactly to ``v*`` and changes least under ``C``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.editing.edit import Edit, EditRequest, WeightDelta
from workbench.editing.hparams import RomeHparams
from workbench.editing.key_stats import key_second_moment
from workbench.model.architecture import mlp_output_site
from workbench.model.tokens import encode_prompt, encode_target, pad_id_of, pad_right, subject_token_span


def context_prefixes(texts: Sequence[str], n: int, words: int, seed: int) -> list[str]:
    """``n`` prefixes: the first ``words`` words of randomly chosen corpus texts, ending with '. '."""
    rng = random.Random(seed)
    chosen = rng.sample(list(texts), min(n, len(texts)))
    return [" ".join(text.split()[:words]).rstrip(".") + ". " for text in chosen]


def _subject_last_positions(tokenizer, prompts: Sequence[str], subject: str) -> list[int]:
    return [subject_token_span(tokenizer, prompt, subject)[1] - 1 for prompt in prompts]


@torch.no_grad()
def _keys_and_outputs(model, prompts: Sequence[str], subject: str, layer: int) -> tuple[Tensor, Tensor]:
    """Key ``[n, d_mlp]`` and MLP output ``[n, d_model]`` at the subject's last token of each prompt."""
    site = mlp_output_site(model, layer)
    tokenizer = model.tokenizer
    tokens = pad_right([encode_prompt(tokenizer, p) for p in prompts], pad_id_of(tokenizer)).to(model.W_E.device)
    positions = torch.tensor(_subject_last_positions(tokenizer, prompts, subject))
    _, cache = model.run_with_cache(tokens, names_filter=[site.key_hook, site.output_hook])
    rows = torch.arange(len(prompts))
    return cache[site.key_hook][rows, positions].cpu(), cache[site.output_hook][rows, positions].cpu()


def optimise_value(model, request: EditRequest, hparams: RomeHparams, prefixes: Sequence[str],
                   original_output: Float[Tensor, " d_model"]) -> tuple[Tensor, dict]:
    """The vector ``delta`` that, added to the MLP output at the subject's last token, makes the
    prefixed prompts continue with ``request.target_new``. Returns it and the loss trace."""
    tokenizer = model.tokenizer
    device = model.W_E.device
    target = encode_target(tokenizer, request.target_new)
    edit_prompts = [prefix + request.prompt for prefix in ["", *prefixes]]
    kl_prompts = [template.format(request.subject) for template in hparams.kl_prompts]
    prompt_ids = [encode_prompt(tokenizer, p) for p in edit_prompts + kl_prompts]
    rows = [ids + target[:-1] if i < len(edit_prompts) else ids for i, ids in enumerate(prompt_ids)]
    tokens = pad_right(rows, pad_id_of(tokenizer)).to(device)
    lookup = torch.tensor(_subject_last_positions(tokenizer, edit_prompts + kl_prompts, request.subject),
                          device=device)
    n_edit = len(edit_prompts)
    target_positions = torch.tensor([[len(ids) - 1 + j for j in range(len(target))] for ids in prompt_ids[:n_edit]],
                                    device=device)
    target_ids = torch.tensor(target, device=device).expand(n_edit, -1)
    kl_positions = torch.tensor([len(ids) - 1 for ids in prompt_ids[n_edit:]], device=device)
    site = mlp_output_site(model, hparams.layer)
    delta = torch.zeros(model.cfg.d_model, device=device, requires_grad=True)

    def add_delta(output, hook):
        output = output.clone()
        output[torch.arange(output.shape[0], device=device), lookup] += delta.to(output.dtype)
        return output

    with torch.no_grad():
        original_kl = model(tokens)[n_edit:][torch.arange(len(kl_prompts)), kl_positions].log_softmax(-1)
    optimizer = torch.optim.Adam([delta], lr=hparams.v_lr)
    max_norm = hparams.clamp_norm_factor * original_output.norm().item()
    losses = []
    for step in range(hparams.v_steps):
        with model.hooks(fwd_hooks=[(site.output_hook, add_delta)]):
            log_probs = model(tokens).float().log_softmax(-1)
        rows_index = torch.arange(n_edit, device=device).unsqueeze(1)
        nll = -log_probs[:n_edit][rows_index, target_positions, target_ids].mean()
        kl_log_probs = log_probs[n_edit:][torch.arange(len(kl_prompts), device=device), kl_positions]
        kl = torch.nn.functional.kl_div(kl_log_probs, original_kl, log_target=True, reduction="batchmean")
        decay = hparams.v_weight_decay * delta.norm() ** 2 / original_output.norm().to(device) ** 2
        loss = nll + hparams.kl_factor * kl + decay
        if not torch.isfinite(loss):
            raise FloatingPointError(f"ROME's value optimisation produced {loss.item()} at step {step}")
        losses.append({"nll": nll.item(), "kl": kl.item(), "decay": decay.item()})
        if nll.item() < hparams.v_early_stop_nll:
            break
        optimizer.zero_grad()
        loss.backward()
        if step == 0 and (delta.grad is None or not delta.grad.any()):
            raise ValueError(f"the MLP output at the subject's last token in layer {hparams.layer} does not reach "
                             "the prediction of the target (no later layer reads it): choose an earlier layer")
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
    if moment is None:
        moment = key_second_moment(model, hparams.layer, texts, hparams.key_stats_tokens, progress=progress)
    statistics_seconds = time.perf_counter() - started
    keys, outputs = _keys_and_outputs(model, [prefix + request.prompt for prefix in ["", *prefixes]],
                                      request.subject, hparams.layer)
    own_key, own_output = keys[0].double(), outputs[0]
    direction = torch.linalg.solve(moment.double(), keys.mean(dim=0).double())
    direction = direction / direction.norm()
    value_change, trace = optimise_value(model, request, hparams, prefixes, own_output)
    target_value = own_output + value_change
    right = (target_value.double() - own_output.double()) / own_key.dot(direction)
    if not (torch.isfinite(direction).all() and torch.isfinite(right).all()):
        raise FloatingPointError("ROME's update is not finite (is the key statistic singular?)")
    delta = WeightDelta.rank_one(site, direction.float(), right.float())
    return Edit(request, (delta,), method="rome", hparams=dict(vars(hparams)),
                timings={"key_statistics_s": statistics_seconds, "total_s": time.perf_counter() - started,
                         "target_value": target_value.tolist(), **trace})
