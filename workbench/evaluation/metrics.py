"""Metrics of one edit case, measured on whatever model state is active (plain, or edit applied).

``measure(model, case)`` gives raw measurements; ``case_metrics(before, after)`` turns a pair of
them into the case's metrics:

- ``efficacy``: p(target_new) > p(ground_truth) on the edit prompt; ``efficacy_accuracy``: the
  teacher-forced token accuracy of target_new there;
- ``paraphrase``: share of paraphrase prompts where p(target_new) > p(ground_truth);
  ``paraphrase_accuracy``: mean teacher-forced token accuracy of target_new there;
- ``neighborhood_score``: share of neighbourhood prompts whose own answer stays more probable
  than target_new (CounterFact's NS); ``specificity`` (``_before``): mean teacher-forced token
  accuracy of the neighbourhood prompts' own answers after (before) the edit (zsRE's);
- ``efficacy_summed``, ``paraphrase_summed``, ``neighborhood_score_summed``: the same three with
  summed log-probabilities;
- ``reverse``, ``portability``: mean teacher-forced token accuracy of the expected answers (NaN
  without prompts); ``*_before`` is the same before the edit, the baseline a multi-token answer's
  easy later tokens earn without any edit;
- ``neighborhood``, ``same_subject``: share of prompts whose top next token is unchanged by the
  edit and whose own answer stays more probable than target_new (per token); ``*_kl``: mean KL divergence
  of the next-token distribution, before || after;
- ``fluency``, ``fluency_before``: n-gram entropy (bits) of a greedy generation from the edit
  prompt after and before the edit (``fluency.py``; NaN when ``fluency_tokens`` is 0).

Two answers are compared as the CounterFact protocol compares them (Meng et al. 2022, the
authors' ``test_batch_prediction``): by their mean per-token log-probability, so that answers of
different token counts compare fairly. The ``*_summed`` metrics compare the summed
log-probabilities (the probabilities of the whole answers) instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.core.cases import EditCase, Probe
from workbench.evaluation.fluency import greedy_continuation, ngram_entropy
from workbench.model.tokens import encode_prompt, encode_target, logits_of, pad_id_of, pad_right, score_targets

FLUENCY_TOKENS = 40


@dataclass(frozen=True)
class Measurement:
    """Raw numbers of one case in one model state (lists follow the case's probe order).
    Log-probabilities are summed over an answer's tokens; ``*_tokens`` are the token counts that
    turn them into per-token means."""

    edit_new: float
    edit_true: float
    edit_accuracy: float
    paraphrase_new: list[float]
    paraphrase_true: list[float]
    paraphrase_accuracy: list[float]
    reverse_accuracy: list[float]
    portability_accuracy: list[float]
    locality_answer: dict[str, list[float]]
    locality_new: dict[str, list[float]]
    locality_accuracy: dict[str, list[float]]
    locality_distributions: dict[str, torch.Tensor]
    fluency: float
    new_tokens: int
    true_tokens: int
    locality_answer_tokens: dict[str, list[int]]


def _scores(model, prompts: list[str], targets: list[str]):
    return score_targets(model, model.tokenizer, prompts, targets) if prompts else None


@torch.no_grad()
def _next_token_log_probs(model, probes: tuple[Probe, ...]) -> torch.Tensor:
    """``[n_probes, d_vocab]`` next-token log-probabilities, all probes in one right-padded pass."""
    if not probes:
        return torch.empty(0)
    prompts = [encode_prompt(model.tokenizer, probe.prompt) for probe in probes]
    tokens = pad_right(prompts, pad_id_of(model.tokenizer)).to(model.W_E.device)
    last = torch.tensor([len(p) - 1 for p in prompts])
    logits = logits_of(model, tokens).float().cpu()
    return logits[torch.arange(len(prompts)), last].log_softmax(-1)


def measure(model, case: EditCase, fluency_tokens: int = FLUENCY_TOKENS) -> Measurement:
    """Every number ``case_metrics`` needs, in the model's current state; generation of
    ``fluency_tokens`` tokens for fluency (0: skip it)."""
    request = case.request
    new, true = request.target_new, request.ground_truth
    edit = _scores(model, [request.prompt] * 2, [new, true])
    paraphrase_prompts = [p.prompt for p in case.paraphrases]
    n = len(paraphrase_prompts)
    paraphrase = _scores(model, paraphrase_prompts * 2, [new] * n + [true] * n)
    reverse = _scores(model, [p.prompt for p in case.reverse], [p.answer for p in case.reverse])
    portability = _scores(model, [p.prompt for p in case.portability], [p.answer for p in case.portability])
    answers, news, accuracies, distributions, lengths = {}, {}, {}, {}, {}
    for group, probes in (("neighbours", case.neighbours), ("same_subject", case.same_subject)):
        lengths[group] = [len(encode_target(model.tokenizer, p.answer)) for p in probes]
        scores = _scores(model, [p.prompt for p in probes] * 2, [p.answer for p in probes] + [new] * len(probes))
        answers[group] = scores.log_prob[: len(probes)].tolist() if scores is not None else []
        news[group] = scores.log_prob[len(probes):].tolist() if scores is not None else []
        accuracies[group] = scores.token_accuracy[: len(probes)].tolist() if scores is not None else []
        distributions[group] = _next_token_log_probs(model, probes)
    return Measurement(
        edit.log_prob[0].item(), edit.log_prob[1].item(), edit.token_accuracy[0].item(),
        paraphrase.log_prob[:n].tolist() if paraphrase is not None else [],
        paraphrase.log_prob[n:].tolist() if paraphrase is not None else [],
        paraphrase.token_accuracy[:n].tolist() if paraphrase is not None else [],
        reverse.token_accuracy.tolist() if reverse is not None else [],
        portability.token_accuracy.tolist() if portability is not None else [],
        answers, news, accuracies, distributions,
        ngram_entropy(greedy_continuation(model, request.prompt, fluency_tokens)) if fluency_tokens else math.nan,
        len(encode_target(model.tokenizer, new)), len(encode_target(model.tokenizer, true)), lengths)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _answer_kept(state: Measurement, group: str, per_token: bool = True) -> list[bool]:
    """Per probe of ``group``: its own answer is more probable than target_new."""
    lengths = state.locality_answer_tokens[group] if per_token else [1] * len(state.locality_answer[group])
    new_length = state.new_tokens if per_token else 1
    return [answer / length > new / new_length
            for answer, length, new in zip(state.locality_answer[group], lengths, state.locality_new[group])]


def _new_wins(state: Measurement, new: list[float], true: list[float], per_token: bool = True) -> list[bool]:
    """Per prompt: target_new is more probable than ground_truth."""
    new_length, true_length = (state.new_tokens, state.true_tokens) if per_token else (1, 1)
    return [a / new_length > b / true_length for a, b in zip(new, true)]


def protocol_metrics(state: Measurement) -> dict[str, float]:
    """The metrics behind the benchmarks' standard scores (``protocol``) in one model state:
    ``efficacy`` and ``efficacy_accuracy``, ``paraphrase`` and ``paraphrase_accuracy``,
    ``neighborhood_score`` and ``specificity``, and the ``*_summed`` forms (see the module docstring)."""
    metrics = {"efficacy_accuracy": state.edit_accuracy, "paraphrase_accuracy": _mean(state.paraphrase_accuracy),
               "specificity": _mean(state.locality_accuracy["neighbours"])}
    for suffix, per_token in (("", True), ("_summed", False)):
        metrics[f"efficacy{suffix}"] = float(_new_wins(state, [state.edit_new], [state.edit_true], per_token)[0])
        metrics[f"paraphrase{suffix}"] = _mean(map(float, _new_wins(state, state.paraphrase_new,
                                                                     state.paraphrase_true, per_token)))
        metrics[f"neighborhood_score{suffix}"] = _mean(map(float, _answer_kept(state, "neighbours", per_token)))
    return metrics


def case_metrics(before: Measurement, after: Measurement) -> dict[str, float]:
    """The case's metrics after the edit (see the module docstring); NaN where it has no prompts."""
    metrics = {
        **protocol_metrics(after),
        "specificity_before": _mean(before.locality_accuracy["neighbours"]),
        "reverse": _mean(after.reverse_accuracy),
        "portability": _mean(after.portability_accuracy),
        "reverse_before": _mean(before.reverse_accuracy),
        "portability_before": _mean(before.portability_accuracy),
        "fluency": after.fluency,
        "fluency_before": before.fluency,
    }
    for group, name in (("neighbours", "neighborhood"), ("same_subject", "same_subject")):
        old, new = before.locality_distributions[group], after.locality_distributions[group]
        if old.numel() == 0:
            metrics[name] = metrics[f"{name}_kl"] = math.nan
            continue
        unchanged = (old.argmax(-1) == new.argmax(-1)).tolist()
        kept = _answer_kept(after, group)
        metrics[name] = _mean(float(u and k) for u, k in zip(unchanged, kept))
        divergence = torch.nn.functional.kl_div(new, old, log_target=True, reduction="none").sum(-1)
        metrics[f"{name}_kl"] = divergence.mean().item()
    return metrics
