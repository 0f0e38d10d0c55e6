"""The standard scores of the field, from the harness's aggregated metrics, in percent.

- CounterFact (Meng et al. 2022): efficacy score ES, paraphrase score PS and neighbourhood score
  NS are the shares of prompts with p(new) > p(true) on the edit prompt and its paraphrases, and
  with p(true) > p(new) on the neighbourhood prompts (``efficacy``, ``paraphrase``,
  ``neighborhood_score``); S is their harmonic mean.
- zsRE (Mitchell et al. 2022; Meng et al. 2022): efficacy, paraphrase and specificity are
  teacher-forced top-1 token accuracies of the new answer on the question and its rephrasing, and
  of the unrelated question's own answer after the edit (``efficacy_accuracy``,
  ``paraphrase_accuracy``, ``specificity``).

Cases read from zsRE records get the zsRE scores; every other case format the CounterFact ones.
"""

from __future__ import annotations

COUNTERFACT_SCORES = (("ES", "efficacy"), ("PS", "paraphrase"), ("NS", "neighborhood_score"))
ZSRE_SCORES = (("efficacy", "efficacy_accuracy"), ("paraphrase", "paraphrase_accuracy"),
               ("specificity", "specificity"))


def _percent(results: dict, metric: str) -> float | None:
    mean = results.get(metric, {}).get("mean")
    return None if mean is None else 100 * mean


def harmonic_mean(values: list[float]) -> float:
    """0 when any value is 0 (as the field's S is)."""
    return 0.0 if min(values) == 0 else len(values) / sum(1 / value for value in values)


def protocol_scores(results: dict, source: str) -> dict:
    """``{"benchmark": "counterfact"|"zsre", <score>: percent or None}``; CounterFact's ``S`` is
    None unless all three of its scores are there."""
    if source == "zsre":
        return {"benchmark": "zsre", **{name: _percent(results, metric) for name, metric in ZSRE_SCORES}}
    scores = {name: _percent(results, metric) for name, metric in COUNTERFACT_SCORES}
    present = [value for value in scores.values() if value is not None]
    overall = harmonic_mean(present) if len(present) == len(scores) else None
    return {"benchmark": "counterfact", "S": overall, **scores}


def format_scores(scores: dict) -> str:
    """One line: ``counterfact: S 89.2, ES 100.0, ...`` (n/a where a score is missing)."""
    cells = [f"{name} {'n/a' if value is None else f'{value:.1f}'}" for name, value in scores.items()
             if name != "benchmark"]
    return f"{scores['benchmark']}: " + ", ".join(cells)
