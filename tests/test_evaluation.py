"""Metrics and the evaluation runner: real numbers on the tiny model, and the aggregate arithmetic."""

import json
import math

import pytest

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.app.cli import main
from workbench.core.cases import parse_cases
from workbench.editing.hparams import RomeHparams
from workbench.editing.registry import tuned_hparams_file
from workbench.editing.rome import compute_rome_edit
from workbench.evaluation.metrics import case_metrics, measure
from workbench.evaluation.runner import aggregate, evaluate
from workbench.model.tokens import score_targets
from workbench.world import CorpusConfig, corpus_rounds, export_edit_cases


@pytest.fixture(scope="module")
def cases(tiny_world):
    return parse_cases(export_edit_cases(tiny_world, "test"))


def test_an_unedited_model_scores_as_unedited(tiny_bridge, cases):
    case = next(c for c in cases if c.same_subject and c.neighbours)
    before = measure(tiny_bridge, case)
    metrics = case_metrics(before, before)
    scores = score_targets(tiny_bridge, tiny_bridge.tokenizer, [case.request.prompt] * 2,
                           [case.request.target_new, case.request.ground_truth])
    assert metrics["efficacy"] == float(scores.log_prob[0] > scores.log_prob[1])
    assert metrics["neighborhood_kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["same_subject_kl"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= metrics["neighborhood"] <= 1.0
    assert metrics["fluency"] == metrics["fluency_before"] > 0
    for name in ("reverse", "portability"):
        assert metrics[name] == metrics[f"{name}_before"] or (math.isnan(metrics[name])
                                                                and math.isnan(metrics[f"{name}_before"]))


def test_runner_measures_an_edit_and_leaves_the_model_as_it_was(tiny_bridge, tiny_world, cases):
    hparams = RomeHparams.from_json(tuned_hparams_file("rome", "tiny"))
    texts = next(corpus_rounds(tiny_world, CorpusConfig(), set()))
    weights = weights_snapshot(tiny_bridge)
    chosen = [c for c in cases if c.request.subject.count(" ") == 1][:3]
    results, records = evaluate(tiny_bridge, chosen,
                                lambda c: compute_rome_edit(tiny_bridge, c.request, hparams, texts), progress=False)
    assert results["n_cases"] == 3 and len(records) == 3
    assert results["efficacy"]["mean"] == pytest.approx(sum(r["metrics"]["efficacy"] for r in records) / 3)
    assert results["efficacy"]["mean"] > 0  # ROME at the tiny model's working layer moves at least one fact
    assert weights_equal(tiny_bridge, weights)
    assert installed_hook_count(tiny_bridge) == 0


def test_aggregate_mean_and_confidence_interval():
    result = aggregate([1.0, 0.0, 1.0, 1.0, math.nan])
    assert result == {"mean": 0.75, "ci95": pytest.approx(1.96 * 0.5 / 2), "n": 4}
    assert aggregate([math.nan]) == {"mean": None, "ci95": None, "n": 0}
    assert aggregate([0.5])["ci95"] is None


def test_eval_command_writes_results_and_never_overwrites(tmp_path, capsys):
    hparams = tuned_hparams_file("rome", "tiny")
    args = ["eval", "--method", "rome", "--model", "tiny", "--hparams", str(hparams), "--n", "2",
            "--out", str(tmp_path)]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("efficacy", "paraphrase", "reverse", "portability", "neighborhood", "same_subject"):
        assert set(results[name]) == {"mean", "ci95", "n"}
    records = [json.loads(line) for line in (tmp_path / "cases.jsonl").read_text().splitlines()]
    assert len(records) == 2
    layer = json.loads(hparams.read_text())["layer"]  # the record says which layer each edit changed
    assert all(r["layers"] == [layer] for r in records) and results["layers_edited"] == [layer]
    capsys.readouterr()
    assert main(args) == 2 and "already exists" in capsys.readouterr().err


def test_empty_case_sets_and_counts_below_one_are_refused_before_any_output(tmp_path, capsys, tiny_bridge):
    import workbench as wb

    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    for command in ("eval", "compare"):
        out = tmp_path / command
        method = ["--method", "ft-l"] if command == "eval" else ["--methods", "ft-l"]
        assert main([command, "--model", "tiny", *method, "--cases", str(empty), "--out", str(out)]) == 2
        assert "has no edit case to use" in capsys.readouterr().err and not out.exists()
        with pytest.raises(SystemExit):
            main([command, "--model", "tiny", *method, "--n", "0", "--out", str(out)])
        assert "expected at least 1, got 0" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ValueError, match="at least 1, got -1"):
        wb.evaluate(tiny_bridge, method="ft-l", n=-1)
