"""Everything the dashboard shows about one edit: predictions, metrics and activations.

``inspect_edit`` measures the model as a session has it (``base_edits`` applied) and again with
the new edit added; the caller holds the model (``SharedModel.use``) for the duration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workbench.app.dashboard.activations import ActivationChange, SiteChange, activation_change, site_changes
from workbench.app.report import predictions, probe_prompts
from workbench.core.cases import EditCase
from workbench.core.edit import Edit, applied_edits
from workbench.evaluation.metrics import case_metrics, measure
from workbench.tracing.trace import TraceConfig, TraceResult, trace_fact

PREDICTION_COUNT = 5


@dataclass(frozen=True)
class EditInspection:
    """``before``/``after``: one row per probe prompt (``report.predictions``); ``metrics``: the
    case's metrics (None when the request has no current answer to compare with)."""

    edit: Edit
    before: list[dict]
    after: list[dict]
    metrics: dict[str, float] | None
    activations: ActivationChange
    sites: list[SiteChange]


def inspect_edit(model, edit: Edit, case: EditCase | None = None, base_edits: Sequence[Edit] = ()) -> EditInspection:
    """Predictions of the edit prompt and, for a known case, its paraphrases, neighbours, reverse
    and portability prompts before and after ``edit``; the case's metric table; the activation
    change on the edit prompt; key, value and weight change at every edited site."""
    request = edit.request
    probes = probe_prompts(request, case)
    case = case or EditCase("typed", request, (), ())
    with applied_edits(model, base_edits):
        before = predictions(model, probes, request, PREDICTION_COUNT)
        measured_before = measure(model, case, fluency_tokens=0) if request.ground_truth else None
    with applied_edits(model, [*base_edits, edit]):
        after = predictions(model, probes, request, PREDICTION_COUNT, context=edit.context)
        measured_after = measure(model, case.in_context(edit.context), fluency_tokens=0) if request.ground_truth \
            else None
    metrics = case_metrics(measured_before, measured_after) if measured_before else None
    return EditInspection(edit, before, after, metrics, activation_change(model, request.prompt, edit, base_edits),
                          site_changes(model, edit, base_edits))


def prediction_rows(inspection: EditInspection) -> list[dict]:
    """One table row per probe prompt: its kind, prompt and expected answer, p(expected) and the
    top predictions before and after the edit."""
    def top(row: dict) -> str:
        return ", ".join(f"{text!r} {p:.2f}" for text, p in row["top"])

    return [{"kind": old["kind"], "prompt": old["prompt"], "expected": old["expected"],
             "p(expected) before": round(old["p_expected"], 4), "p(expected) after": round(new["p_expected"], 4),
             "top before": top(old), "top after": top(new)}
            for old, new in zip(inspection.before, inspection.after)]


def traces_before_after(model, edit: Edit, base_edits: Sequence[Edit] = (), config: TraceConfig | None = None,
                        seed: int = 0) -> tuple[TraceResult, TraceResult]:
    """Causal traces of the edit prompt without and with ``edit`` (``base_edits`` applied to both):
    of the current answer before, of the new target after, with the same noise."""
    if edit.context:
        raise ValueError("an in-context edit changes the prompt, not the model: a trace after it would restore every "
                         "token of its demonstrations; trace the prompt with its context on the Trace page instead")
    request = edit.request
    with applied_edits(model, base_edits):
        before = trace_fact(model, request.prompt, request.subject, request.ground_truth, config,
                            torch.Generator().manual_seed(seed))
    with applied_edits(model, [*base_edits, edit]):
        after = trace_fact(model, request.prompt, request.subject, request.target_new, config,
                           torch.Generator().manual_seed(seed))
    return before, after
