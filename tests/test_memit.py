"""MEMIT: the paper's identity with ROME for one request at one layer, many requests edited at once,
and bad batches refused before anything changes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.edit import EditRequest
from workbench.editing.editor import Editor
from workbench.editing.hparams import MemitHparams, RomeHparams
from workbench.editing.memit import compute_memit_edit, mean_keys, residuals_at_subjects
from workbench.editing.registry import method_hparams
from workbench.evaluation.metrics import measure
from workbench.world.cases import load_edit_cases

# One prompt (no prefixes), no weight decay and no clamp: the value optimisations of ROME and
# MEMIT then minimise the same loss from the same start.
ROME = RomeHparams(layer=1, v_steps=8, v_weight_decay=0.0, clamp_norm_factor=1e6, n_prefixes=0, key_stats_tokens=2000)


def memit_hparams(weight: float, **fields) -> MemitHparams:
    return MemitHparams(**{**dataclasses.asdict(ROME), "span": 1, "mom2_update_weight": weight, **fields})


@pytest.fixture(scope="module")
def cases(tiny_world):
    return load_edit_cases(None, tiny_world)


def test_one_request_at_one_layer_is_romes_update_scaled_as_sherman_morrison_says(tiny_bridge, tiny_world, cases):
    request = cases[0].request
    rome = Editor(tiny_bridge, "rome", ROME, facts=tiny_world)
    rome_delta = rome(request).deltas[0].matrix().double()
    for weight in (0.01, 10.0):  # (lambda C + k k^T) grows ill-conditioned as lambda goes to 0
        memit = Editor(tiny_bridge, "memit", memit_hparams(weight), facts=tiny_world, prepared=rome._prepared)
        [delta] = memit(request).deltas
        assert delta.site == rome(request).deltas[0].site
        moment = rome.prepared().moment(1).double()
        key = mean_keys(tiny_bridge, [request], [], 1)[0].double()
        s = key @ torch.linalg.solve(moment, key)
        torch.testing.assert_close(delta.matrix().double(), rome_delta * s / (weight + s), rtol=1e-4, atol=1e-6)


def test_a_batch_edited_at_once_satisfies_every_request(tiny_bridge, tiny_world, cases):
    by_subject = {case.request.subject: case for case in reversed(cases) if case.request.ground_truth}
    chosen = list(by_subject.values())[:4]
    requests = [case.request for case in chosen]
    # At one layer the joint solve fits all four keys at once; a small covariance weight lets it
    # reach them (the tiny model's keys are short against the default model's weight).
    hparams = dataclasses.replace(method_hparams("memit"), span=1, mom2_update_weight=10.0)
    editor = Editor(tiny_bridge, "memit", hparams, facts=tiny_world)
    snapshot = weights_snapshot(tiny_bridge)
    edit = compute_memit_edit(tiny_bridge, requests, hparams, editor.prepared())
    assert edit.layers == (2,) and len(edit.details["requests"]) == 4
    assert edit.deltas[0].left.shape[1] == 4  # the rank of the update is the batch size
    with edit.applied(tiny_bridge):
        for case in chosen:
            after = measure(tiny_bridge, case, fluency_tokens=0)
            assert after.edit_new / after.new_tokens > after.edit_true / after.true_tokens, case.request
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0


def test_the_residual_is_spread_over_the_layers_towards_each_target(tiny_bridge, tiny_world, cases):
    requests = [case.request for case in cases[:3]]
    editor = Editor(tiny_bridge, "memit", facts=tiny_world)
    edit = compute_memit_edit(tiny_bridge, requests, editor.hparams, editor.prepared())
    assert edit.layers == editor.hparams.layers() == (0, 1, 2)
    before = residuals_at_subjects(tiny_bridge, requests, 2)
    with edit.applied(tiny_bridge):
        after = residuals_at_subjects(tiny_bridge, requests, 2)
    change = after - before  # every layer's update moved the residual at the last layer
    assert (change.norm(dim=1) > 0.1 * before.norm(dim=1)).all()


def test_bad_batches_are_refused_and_change_nothing(tiny_bridge, tiny_world, cases):
    editor = Editor(tiny_bridge, "memit", facts=tiny_world)
    request = cases[0].request
    snapshot = weights_snapshot(tiny_bridge)
    with pytest.raises(ValueError, match="at least one request"):
        compute_memit_edit(tiny_bridge, [], editor.hparams, editor.prepared())
    other = EditRequest(request.prompt, request.subject, request.target_new + "x", request.ground_truth)
    with pytest.raises(ValueError, match="contradict each other"):
        compute_memit_edit(tiny_bridge, [request, other], editor.hparams, editor.prepared())
    with pytest.raises(ValueError, match="layer"):
        compute_memit_edit(tiny_bridge, [request], dataclasses.replace(editor.hparams, layer=9), editor.prepared())
    with pytest.raises(ValueError, match="span"):
        dataclasses.replace(editor.hparams, span=0)
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0


def test_batch_evaluation_keeps_the_batch_size_and_a_batch_of_one_is_the_plain_evaluation(tmp_path, capsys,
                                                                                       tiny_model_dir):
    import json

    from workbench.app.cli import main

    run = ["eval", "--method", "memit", "--model", "tiny", "--n", "4", "--layer", "2"]
    assert main([*run, "--out", str(tmp_path / "plain")]) == 0
    assert main([*run, "--out", str(tmp_path / "ones"), "--batch-size", "1"]) == 0  # the plain path
    assert main([*run, "--out", str(tmp_path / "pairs"), "--batch-size", "2"]) == 0
    assert "2 at a time" in capsys.readouterr().out
    pairs = json.loads((tmp_path / "pairs" / "results.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "pairs" / "cases.jsonl").read_text().splitlines()]
    assert pairs["batch_size"] == 2 and pairs["n_cases"] == 4 and [r["batch_size"] for r in records] == [2] * 4

    from workbench.app.runs import RunOptions, run_batches
    from workbench.evaluation.compare import MethodSpec
    from workbench.model.handle import open_model

    handle = open_model(tiny_model_dir)
    cases = load_edit_cases(None, handle.world)[:4]
    results, batch_of_one, _ = run_batches(handle, cases, MethodSpec("memit", "memit", "2"), 1,
                                           RunOptions(None), fluency_tokens=40, progress=False)
    plain = [json.loads(line) for line in (tmp_path / "plain" / "cases.jsonl").read_text().splitlines()]
    for record, expected in zip(batch_of_one, plain):
        for name, value in expected["metrics"].items():
            assert record["metrics"][name] == pytest.approx(value, abs=1e-6), name

    capsys.readouterr()
    assert main([*run[:-2], "--method", "ike", "--out", str(tmp_path / "ike"), "--batch-size", "2"]) == 2
    assert "ike edits in context: give a batch size of 1" in capsys.readouterr().err
