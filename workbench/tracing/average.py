"""Causal traces averaged over many known facts, by token group and layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench.core.progress import Progress, reported
from workbench.model.tokens import score_targets
from workbench.tracing.groups import TOKEN_GROUPS, grouped
from workbench.tracing.trace import TraceConfig, TraceResult, trace_fact


@dataclass(frozen=True)
class AverageTrace:
    """Mean indirect effect (restored minus corrupted probability) ``[n_groups, n_layers]`` per kind,
    over ``n_facts`` traced facts; ``group_counts[g]`` facts had tokens in group ``g``."""

    effects: dict[str, np.ndarray]
    group_counts: list[int]
    n_facts: int
    n_candidates: int
    mean_clean_prob: float
    mean_corrupted_prob: float
    config: TraceConfig

    def to_dict(self) -> dict:
        return {
            "groups": list(TOKEN_GROUPS),
            "effects": {kind: _json_grid(grid) for kind, grid in self.effects.items()},
            "group_counts": self.group_counts, "n_facts": self.n_facts, "n_candidates": self.n_candidates,
            "mean_clean_prob": self.mean_clean_prob, "mean_corrupted_prob": self.mean_corrupted_prob,
            "samples": self.config.samples, "noise_scale": self.config.noise_scale, "window": self.config.window,
        }


def _json_grid(grid: np.ndarray) -> list[list[float | None]]:
    """Rows of floats with NaN written as None (JSON has no NaN)."""
    return [[None if np.isnan(x) else float(x) for x in row] for row in grid]


def known_facts(model, facts: Sequence[dict]) -> list[dict]:
    """The facts (dicts with ``prompt``, ``subject``, ``answer``) whose answer's first token is the
    model's top prediction."""
    if not facts:
        return []
    scores = score_targets(model, model.tokenizer, [f["prompt"] for f in facts], [f["answer"] for f in facts])
    return [fact for fact, known in zip(facts, scores.first_token_is_top1.tolist()) if known]


def average_traces(traces: Sequence[TraceResult]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Group-wise mean indirect effects over ``traces`` and how many traces had each group; a group
    that no trace has (a one-token subject has no middle tokens) stays NaN."""
    effects = {}
    for kind in traces[0].config.kinds:
        stacked = np.stack([grouped(t.indirect_effect(kind), t.subject_span) for t in traces])
        present = ~np.isnan(stacked)
        totals = np.where(present, stacked, 0.0).sum(axis=0)
        counts = present.sum(axis=0)
        effects[kind] = np.divide(totals, counts, out=np.full(totals.shape, np.nan), where=counts > 0)
    return effects, counts[:, 0].astype(int).tolist()


def fact_seed(seed: int, index: int) -> int:
    """The noise seed of the ``index``-th traced fact of an average seeded with ``seed``: each fact's
    noise has its own generator, so its trace does not depend on the facts traced before it."""
    return seed * 1_000_003 + index


def average_trace(model, facts: Sequence[dict], n: int = 100, config: TraceConfig | None = None,
                  seed: int = 0, progress: Progress = True) -> AverageTrace:
    """Trace the first ``n`` facts the model knows among ``facts`` (the ``index``-th with the noise
    of ``fact_seed(seed, index)``) and average them."""
    config = config or TraceConfig()
    chosen = known_facts_to_trace(model, facts, n)
    traces = [trace_nth_fact(model, index, fact, config, seed)
              for index, fact in reported(list(enumerate(chosen)), "tracing facts", progress)]
    return average_of(traces, len(facts), config)


def trace_nth_fact(model, index: int, fact: dict, config: TraceConfig, seed: int) -> TraceResult:
    """The trace of ``fact``, the ``index``-th of an average seeded with ``seed`` (``fact_seed``)."""
    return trace_fact(model, fact["prompt"], fact["subject"], fact["answer"], config,
                      torch.Generator().manual_seed(fact_seed(seed, index)))


def known_facts_to_trace(model, facts: Sequence[dict], n: int) -> list[dict]:
    """The first ``n`` facts the model knows among ``facts``; none is a clear error."""
    chosen = known_facts(model, facts)[:n]
    if not chosen:
        raise ValueError("the model knows none of the given facts: nothing to trace")
    return chosen


def average_of(traces: Sequence[TraceResult], n_candidates: int, config: TraceConfig) -> AverageTrace:
    """The ``AverageTrace`` of ``traces``, chosen among ``n_candidates`` facts."""
    effects, counts = average_traces(traces)
    return AverageTrace(effects, counts, len(traces), n_candidates,
                        float(np.mean([t.clean_prob for t in traces])),
                        float(np.mean([t.corrupted_prob for t in traces])), config)
