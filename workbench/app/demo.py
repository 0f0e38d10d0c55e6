"""``workbench demo``: the whole story on one fact of the model's world.

What the model believes; causal tracing of one fact it knows; the locator's choice of layer; a
ROME edit there, applied through hooks; predictions before and after for the edit prompt and
its paraphrase, neighbourhood, reverse and portability prompts; the case's metrics; and a check
that the model's weights are what they were.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from workbench.app.report import format_before_after, predictions, probe_prompts
from workbench.core.cases import EditCase, parse_cases
from workbench.core.fingerprint import model_fingerprint
from workbench.core.io import refuse_existing
from workbench.core.plotting import figure_paths
from workbench.editing.editor import Editor
from workbench.evaluation.metrics import case_metrics, measure
from workbench.evaluation.runner import HEADLINE_METRICS
from workbench.model.handle import ModelHandle
from workbench.model.tokens import score_targets, top_next_tokens
from workbench.tracing.locator import locate_from_trace
from workbench.tracing.plots import plot_trace
from workbench.tracing.trace import TraceConfig, TraceResult, trace_fact
from workbench.world import export_edit_cases


def _beliefs(model, cases: list[EditCase]) -> list[str]:
    prompts = [case.request.prompt for case in cases]
    scores = score_targets(model, model.tokenizer, prompts, [case.request.ground_truth for case in cases])
    lines = []
    for case, log_prob in zip(cases, scores.log_prob.tolist()):
        top = ", ".join(f"{t!r} {p:.2f}" for t, p in top_next_tokens(model, model.tokenizer, case.request.prompt, 3))
        lines.append(f"  {case.request.prompt} ... world says {case.request.ground_truth!r}: "
                     f"p = {math.exp(log_prob):.3f}; top next tokens: {top}")
    return lines


def _known_case(model, cases: list[EditCase]) -> EditCase:
    """The first case whose true answer's first token is the model's top prediction."""
    scores = score_targets(model, model.tokenizer, [c.request.prompt for c in cases],
                           [c.request.ground_truth for c in cases])
    known = [case for case, top in zip(cases, scores.first_token_is_top1.tolist()) if top]
    if not known:
        raise ValueError("the model knows none of its world's test facts: nothing to demonstrate")
    return known[0]


def _strongest_cells(trace: TraceResult) -> list[str]:
    lines = []
    for kind in trace.grids:
        effect = trace.indirect_effect(kind)
        token, layer = np.unravel_index(np.argmax(effect), effect.shape)
        lines.append(f"  {kind:>5}: strongest at token {trace.tokens[token]!r} (position {token}), layer {layer}: "
                     f"indirect effect {effect[token, layer]:.3f}")
    return lines


def run_demo(handle: ModelHandle, n_beliefs: int = 3, plot: str | Path | None = None) -> None:
    """Print the story (see the module docstring) for the first known fact of the test split of
    the handle's world."""
    model, world = handle.bridge, handle.world
    if plot:
        refuse_existing(figure_paths(plot))
    cases = parse_cases(export_edit_cases(world, "test"), "the world's test split")
    print(f"1. What the model believes ({n_beliefs} facts of its world's test split):")
    print("\n".join(_beliefs(model, cases[:n_beliefs])))
    case = _known_case(model, cases)
    request = case.request
    fingerprint = model_fingerprint(model)

    trace = trace_fact(model, request.prompt, request.subject, request.ground_truth, TraceConfig(),
                       torch.Generator().manual_seed(0))
    print(f"\n2. Causal tracing of {request.prompt!r} -> {request.ground_truth!r}: clean p {trace.clean_prob:.3f}, "
          f"subject corrupted p {trace.corrupted_prob:.3f}")
    print("\n".join(_strongest_cells(trace)))
    if plot:
        print(f"  heatmaps: {', '.join(str(path) for path in plot_trace(trace, plot))}")
    location = locate_from_trace(model, trace)
    print(f"\n3. The locator picks layer {location.site.layer} ({location.site.module}); MLP effect at the subject's "
          f"last token {location.last_subject_effect:.3f}")
    if location.warning:
        print(f"  warning: {location.warning}")

    edit = Editor.for_model(handle, "rome")(request, location.site.layer)
    print(f"\n4. ROME at layer {location.site.layer} ({edit.timings['total_s']:.1f} s): "
          f"{request.prompt!r} -> {request.target_new!r}")
    probes = probe_prompts(request, case)
    before, plain = predictions(model, probes, request), measure(model, case)
    with edit.applied(model):
        after, edited = predictions(model, probes, request), measure(model, case)
    print(format_before_after(before, after))

    metrics = case_metrics(plain, edited)
    print("\n5. This case's metrics (shares of its prompts; reverse and portability are token accuracy):")
    for name in HEADLINE_METRICS:
        if not math.isnan(metrics[name]):
            print(f"  {name:>14}: {metrics[name]:.3f}")
    print(f"  {'fluency':>14}: {metrics['fluency']:.2f} bits (before the edit {metrics['fluency_before']:.2f})")
    unchanged = model_fingerprint(model) == fingerprint
    print(f"\n6. The model's weights are {'unchanged' if unchanged else 'CHANGED'} (the edit was applied "
          "through hooks); `workbench edit --export DIR` writes an edited copy.")
