"""The field's standard scores: CounterFact's S, ES, PS, NS and zsRE's accuracies, from real
measurements on the tiny model and from the aggregate arithmetic."""

import math

import pytest
import torch

from workbench.core.cases import parse_cases
from workbench.editing.editor import Editor
from workbench.evaluation.metrics import Measurement, protocol_metrics
from workbench.evaluation.protocol import format_scores, harmonic_mean, protocol_scores
from workbench.evaluation.runner import evaluate
from workbench.model.tokens import encode_target, score_targets
from workbench.world import export_edit_cases


def as_zsre_record(case) -> dict:
    """A world case written as MEND's zsRE record (question, rephrase, unrelated question)."""
    request, neighbour = case.request, case.neighbours[0]
    return {"subject": request.subject, "src": request.prompt, "rephrase": case.paraphrases[0].prompt,
            "alt": request.target_new, "answers": [request.ground_truth], "loc": neighbour.prompt,
            "loc_ans": neighbour.answer}


@pytest.fixture(scope="module")
def world_cases(tiny_world):
    return [c for c in parse_cases(export_edit_cases(tiny_world, "test")) if c.neighbours and c.paraphrases][:4]


@pytest.fixture(scope="module")
def ft_l(tiny_bridge, tiny_world):
    return Editor(tiny_bridge, "ft-l", facts=tiny_world)


def test_counterfact_scores_are_the_shares_the_paper_defines(tiny_bridge, world_cases, ft_l):
    results, records = evaluate(tiny_bridge, world_cases, lambda case: ft_l(case.request), progress=False,
                                fluency_tokens=0)
    for case, record in zip(world_cases, records):
        metrics = record["metrics"]
        assert metrics["neighborhood_score"] >= metrics["neighborhood"]  # NS does not ask the top token to stay
        with ft_l(case.request).applied(tiny_bridge):
            prompts = [p.prompt for p in case.neighbours] * 2
            targets = [p.answer for p in case.neighbours] + [case.request.target_new] * len(case.neighbours)
            log_p = score_targets(tiny_bridge, tiny_bridge.tokenizer, prompts, targets).log_prob
        lengths = torch.tensor([len(encode_target(tiny_bridge.tokenizer, target)) for target in targets])
        n = len(case.neighbours)
        per_token = log_p / lengths
        assert metrics["neighborhood_score"] == pytest.approx(float((per_token[:n] > per_token[n:]).float().mean()))
        assert metrics["neighborhood_score_summed"] == pytest.approx(float((log_p[:n] > log_p[n:]).float().mean()))
    scores = results["scores"]
    assert scores["benchmark"] == "counterfact"
    assert scores["ES"] == pytest.approx(100 * results["efficacy"]["mean"])
    assert scores["NS"] == pytest.approx(100 * results["neighborhood_score"]["mean"])
    assert scores["S"] == pytest.approx(harmonic_mean([scores["ES"], scores["PS"], scores["NS"]]))
    targets = [c.request.target_new for c in world_cases] + [c.request.ground_truth for c in world_cases]
    log_p = score_targets(tiny_bridge, tiny_bridge.tokenizer, [c.request.prompt for c in world_cases] * 2,
                          targets).log_prob  # the unedited model
    log_p = log_p / torch.tensor([len(encode_target(tiny_bridge.tokenizer, target)) for target in targets])
    n = len(world_cases)
    assert results["scores_before"]["ES"] == pytest.approx(100 * float((log_p[:n] > log_p[n:]).float().mean()))


def test_answers_of_different_lengths_compare_per_token():
    """A one-token new answer at log p = -2 against a three-token true answer at -3 in all: the
    whole new answer is more probable (summed), but each of its tokens less (per token, as the
    CounterFact protocol scores)."""
    state = Measurement(edit_new=-2.0, edit_true=-3.0, edit_accuracy=1.0, paraphrase_new=[-2.0, -0.5],
                        paraphrase_true=[-3.0, -3.0], paraphrase_accuracy=[1.0, 1.0], reverse_accuracy=[],
                        portability_accuracy=[], locality_answer={"neighbours": [-3.0]},
                        locality_new={"neighbours": [-2.0]}, locality_accuracy={"neighbours": [1.0]},
                        locality_distributions={}, fluency=math.nan, new_tokens=1, true_tokens=3,
                        locality_answer_tokens={"neighbours": [3]})
    metrics = protocol_metrics(state)
    assert metrics["efficacy"] == 0.0 and metrics["efficacy_summed"] == 1.0
    assert metrics["paraphrase"] == 0.5 and metrics["paraphrase_summed"] == 1.0
    assert metrics["neighborhood_score"] == 1.0 and metrics["neighborhood_score_summed"] == 0.0


def test_zsre_records_get_token_accuracies(tiny_bridge, world_cases, ft_l):
    cases = parse_cases([as_zsre_record(c) for c in world_cases], "zsre records")
    results, records = evaluate(tiny_bridge, cases, lambda case: ft_l(case.request), progress=False,
                                fluency_tokens=0)
    scores = results["scores"]
    assert set(scores) == {"benchmark", "efficacy", "paraphrase", "specificity"} and scores["benchmark"] == "zsre"
    assert scores["efficacy"] == pytest.approx(100 * results["efficacy_accuracy"]["mean"])
    assert scores["specificity"] == pytest.approx(100 * results["specificity"]["mean"])
    case = cases[0]
    before = score_targets(tiny_bridge, tiny_bridge.tokenizer, [case.neighbours[0].prompt],
                           [case.neighbours[0].answer]).token_accuracy.item()
    assert records[0]["metrics"]["specificity_before"] == pytest.approx(before)


def test_the_harmonic_mean_and_missing_scores():
    def result(mean):
        return {"mean": mean}

    full = {"efficacy": result(1.0), "paraphrase": result(0.5), "neighborhood_score": result(0.5)}
    assert protocol_scores(full, "easyedit")["S"] == pytest.approx(60.0)
    assert protocol_scores({**full, "paraphrase": result(0.0)}, "rome")["S"] == 0.0
    missing = protocol_scores({**full, "neighborhood_score": result(None)}, "workbench")
    assert missing["S"] is None and missing["NS"] is None and math.isclose(missing["ES"], 100.0)
    assert format_scores(missing) == "counterfact: S n/a, ES 100.0, PS 50.0, NS n/a"
