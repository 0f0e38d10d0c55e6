"""Edit-latency benchmarks, every number of a comparison measured on one machine in one run.

``bench_rome`` (``workbench bench rome``): computing the key statistics once (no cache), the median
time of one edit with the statistics already in hand, the median time to evaluate one edit
(every probe of its case measured before and after, the edit applied through hooks), and the
median time of one step of the value optimisation against a plain Hugging Face forward and
backward of the same batch (``value_step_seconds``).

``bench_mend`` (``workbench bench mend``): the median time of a MEND edit and of a ROME edit (key
statistics in hand) on the same cases, and their ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from workbench.core.cases import EditCase
from workbench.core.edit import EditRequest
from workbench.editing.editor import Editor
from workbench.editing.hparams import RomeHparams
from workbench.editing.key_stats import compute_key_second_moment
from workbench.editing.rome import (
    ValueObjective,
    context_prefixes,
    keys_and_outputs,
    kl_from_original,
    value_batch,
    value_weight_decay,
)
from workbench.evaluation.metrics import measure
from workbench.model.architecture import mlp_output_site
from workbench.model.frozen import frozen_weights


def bench_rome(model, cases: Sequence[EditCase], editor: Editor) -> dict:
    """Time ``editor`` (a ROME editor) on ``cases``; see the module docstring."""
    if editor.name != "rome":
        raise ValueError(f"bench rome needs a ROME editor, got {editor.name!r}")
    if not cases:
        raise ValueError("bench rome needs at least one edit case")
    hparams, key_statistics = editor.hparams, editor.prepared()
    started = time.perf_counter()
    compute_key_second_moment(model, hparams.layer, key_statistics.texts(), hparams.key_stats_tokens, progress=False)
    statistics_s = time.perf_counter() - started
    key_statistics.moment(hparams.layer)  # the timed edits below use the cached statistic
    edit_s, eval_s = [], []
    for case in cases:
        started = time.perf_counter()
        edit = editor(case.request)
        edit_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        measure(model, case)
        with edit.applied(model):
            measure(model, case)
        eval_s.append(time.perf_counter() - started)
    return {"layer": hparams.layer, "key_stats_tokens": hparams.key_stats_tokens, "n_edits": len(cases),
            "key_statistics_s": statistics_s, "median_edit_s": statistics.median(edit_s),
            "median_eval_s": statistics.median(eval_s),
            "edits_per_statistics": statistics_s / statistics.median(edit_s),
            **value_step_seconds(model, cases[0].request, hparams, key_statistics.texts())}


def value_step_seconds(model, request: EditRequest, hparams: RomeHparams, texts, repeats: int = 9) -> dict:
    """Median times of one step of ROME's value optimisation of ``request`` (forward of its batch
    with ``delta`` added, the loss, the backward to ``delta``), timed in alternation on the same
    batch and ``delta``, with every weight frozen:

    - ``step_s``: the workbench's step (``ValueObjective``, as an edit runs it);
    - ``hf_step_s``: a plain step through the Hugging Face model (the same ``plain_view`` forward,
      ``delta`` added by a PyTorch forward hook on the site's module) with the loss read from the
      log-softmax of every position, as the authors' code computes it;
    - ``bridge_step_s``: the workbench's step through the TransformerBridge and its hook points
      (the path an edit takes while a caller's hooks are applied to the bridge).

    ``hf_loss_difference``: how far the losses of the first two differ (they compute one function).
    """
    device = model.W_E.device
    site = mlp_output_site(model, hparams.layer)
    prefixes = context_prefixes(texts, hparams.n_prefixes, hparams.prefix_words, hparams.seed)
    batch = value_batch(model.tokenizer, request, hparams, prefixes, device)
    original_output = keys_and_outputs(model, [request.prompt], request.subject, hparams.layer)[1][0]
    generator = torch.Generator().manual_seed(0)
    delta = (0.1 * original_output.norm() * torch.randn(model.cfg.d_model, generator=generator)
             / model.cfg.d_model ** 0.5).to(device).requires_grad_()
    with frozen_weights(model):
        objective = ValueObjective(model, site, batch, hparams, original_output, through_bridge=False)
        through_bridge = ValueObjective(model, site, batch, hparams, original_output, through_bridge=True)
        steps = {"step_s": lambda: objective(delta)[0], "bridge_step_s": lambda: through_bridge(delta)[0],
                 "hf_step_s": lambda: _authors_loss(objective, delta)}
        seconds: dict[str, list[float]] = {name: [] for name in steps}
        losses = {}
        for repeat in range(repeats + 2):  # two warm-up rounds
            for name, step in steps.items():
                started = time.perf_counter()
                loss = step()
                delta.grad = None
                loss.backward()
                if repeat >= 2:
                    seconds[name].append(time.perf_counter() - started)
                losses[name] = loss.item()
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {**medians, "step_ratio_vs_hf": medians["step_s"] / medians["hf_step_s"],
            "bridge_step_ratio_vs_hf": medians["bridge_step_s"] / medians["hf_step_s"],
            "step_batch": list(batch.tokens.shape), "hf_loss_difference": abs(losses["step_s"] - losses["hf_step_s"]),
            "threads": torch.get_num_threads()}


def _authors_loss(objective: ValueObjective, delta):
    """The value loss at ``delta`` from the same plain Hugging Face forward pass, read as the
    authors' code reads it: the log-softmax of every position, then the target and KL positions."""
    batch = objective.batch
    log_probs = objective.logits(delta).float().log_softmax(-1)
    edit_rows = torch.arange(batch.n_edit, device=delta.device).unsqueeze(1)
    nll = -log_probs[:batch.n_edit][edit_rows, batch.targets.positions, batch.targets.target_ids].mean()
    kl_rows = torch.arange(len(batch.kl_positions), device=delta.device)
    kl = kl_from_original(log_probs[batch.n_edit:][kl_rows, batch.kl_positions], objective.original_kl)
    decay = value_weight_decay(delta, objective.original_output, objective.hparams.v_weight_decay)
    return nll + objective.hparams.kl_factor * kl + decay


def median_edit_seconds(editor: Editor, cases: Sequence[EditCase]) -> float:
    """The median wall time of ``editor`` on each case's request."""
    seconds = []
    for case in cases:
        started = time.perf_counter()
        editor(case.request)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def bench_mend(cases: Sequence[EditCase], mend: Editor, rome: Editor) -> dict:
    """MEND's and ROME's median edit latency on ``cases`` (each editor warmed up on the first case,
    so ROME's key statistic and MEND's network are in hand)."""
    if not cases:
        raise ValueError("bench mend needs at least one edit case")
    mend(cases[0].request)
    rome(cases[0].request)
    mend_s, rome_s = median_edit_seconds(mend, cases), median_edit_seconds(rome, cases)
    return {"n_edits": len(cases), "rome_layer": rome.hparams.layer, "mend_layers": list(mend.hparams.layers),
            "mend_edit_s": mend_s, "rome_edit_s": rome_s, "latency_ratio": mend_s / rome_s}
