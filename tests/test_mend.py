"""MEND: the editor network, the edit gradient, training on the tiny preset, checkpoints, the CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.app.cli import main
from workbench.core.edit import WeightDelta, delta_hooks
from workbench.core.fingerprint import model_fingerprint
from workbench.editing.editor import Editor
from workbench.editing.hparams import IkeHparams, MendHparams
from workbench.editing.mend import (
    MendNetwork,
    compute_mend_edit,
    edit_gradients,
    edited_sites,
    load_mend,
    new_network,
    save_mend,
    site_shape,
)
from workbench.editing.mend_training import edit_losses, train_mend, training_edits, validation_loss
from workbench.editing.registry import tuned_hparams_file
from workbench.editing.target_loss import target_batch
from workbench.evaluation.compare import compare_methods, label_directory, parse_method_specs
from workbench.model.tokens import encode_prompt, encode_target
from workbench.world.cases import load_edit_cases

SMALL = MendHparams(layers=(-2, -1), rank=16, train_steps=40, batch_size=4, lr=3e-3, validation_edits=8,
                    validation_every=20)


def test_observe_keeps_the_mean_and_variance_of_everything_seen():
    network = MendNetwork([(3, 2)], "bottleneck", rank=4, step_size=1e-3)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 3, generator=generator), torch.randn(n, 2, generator=generator)) for n in (5, 2, 9)]
    for keys, grads in batches:
        network.observe(0, keys, grads)
    everything = torch.cat([torch.cat(pair, dim=-1) for pair in batches]).double()
    assert torch.allclose(network.mean[0], everything.mean(0))
    assert torch.allclose(network.sum_squares[0] / (network.count[0] - 1), everything.var(0))


@pytest.mark.parametrize("editor", ["bottleneck", "reference"])
def test_an_untrained_editor_is_a_scaled_gradient_step_on_standardised_pairs(editor):
    network = MendNetwork([(3, 2), (3, 2)], editor, rank=4, step_size=0.5)
    keys, grads = torch.randn(6, 3), torch.randn(6, 2)
    with pytest.raises(ValueError, match="not been trained"):
        network(1, keys, grads)
    network.observe(1, keys, grads)
    left, right = network.weight_change(1, keys, grads)
    pairs = torch.cat([keys, grads], dim=-1)
    standard = ((pairs - pairs.mean(0)) / pairs.std(0)).float()
    expected = -0.5 * standard[:, :3].T @ standard[:, 3:]
    assert left.shape == (3, 6) and right.shape == (6, 2)
    assert torch.allclose(left @ right, expected, atol=1e-5)


def test_the_reference_editor_has_one_network_per_weight_shape_and_the_authors_blocks():
    """Two weights of shape (3, 2) share an editor, the (2, 3) weight has its own; each of its two
    blocks computes u + relu(s_w * (U V u + b) + o_w) with the weight's own scale and shift."""
    network = MendNetwork([(3, 2), (2, 3), (3, 2)], "reference", rank=2, step_size=1.0)
    assert len(network.editors) == 2 and [len(editor) for editor in network.editors] == [2, 2]
    assert network.editor_of == [0, 1, 0] and network.index_in_editor == [0, 0, 1]
    block = network.editors[0][1]
    assert block.u.shape == (5, 2) and block.v.shape == (2, 5) and block.scale.shape == (2, 5)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    u = torch.randn(4, 5, generator=generator)
    by_hand = u.clone()
    for block in network.editors[0]:
        by_hand = by_hand + torch.relu(block.scale[1] * (by_hand @ block.v.T @ block.u.T + block.bias) + block.shift[1])
    network.count[2], network.mean[2], network.sum_squares[2] = 2.0, 0.0, 1.0  # standardisation = identity
    keys, grads = network(2, u[:, :3], u[:, 3:])
    assert torch.allclose(torch.cat([keys, grads], dim=-1), by_hand, atol=1e-5)
    with pytest.raises(ValueError, match="share d_in \\+ d_out"):
        MendNetwork([(3, 2), (3, 3)], "reference", rank=2, step_size=1.0)


@pytest.mark.parametrize("matrices", [("out",), ("in", "out")])
def test_the_pairs_are_the_gradient_of_the_edit_loss_with_respect_to_the_weight(tiny_bridge, tiny_world, matrices):
    """sum_t outer(k_t, d_t) equals autograd's gradient of the NLL with respect to a weight change,
    for the MLP output and input projections."""
    request = load_edit_cases(None, tiny_world)[0].request
    sites = edited_sites(tiny_bridge, dataclasses.replace(SMALL, matrices=matrices))
    assert [site.module.rsplit(".", 1)[1] for site in sites] == [name for _ in range(2) for name in (
        ["c_fc", "c_proj"] if "in" in matrices else ["c_proj"])]
    pairs = edit_gradients(tiny_bridge, request, sites)
    batch = target_batch(tiny_bridge.tokenizer, [request.prompt], request.target_new, "cpu")
    changes = [torch.zeros(site_shape(tiny_bridge, site), requires_grad=True) for site in sites]
    with tiny_bridge.hooks(fwd_hooks=delta_hooks([WeightDelta.dense(s, c) for s, c in zip(sites, changes)])):
        nll = batch.nll(tiny_bridge(batch.tokens))
    for grad, (keys, output_grads) in zip(torch.autograd.grad(nll, changes), pairs):
        assert torch.allclose(keys.T @ output_grads, grad, atol=1e-6)
        assert grad.abs().max() > 0
    assert installed_hook_count(tiny_bridge) == 0


def test_training_edits_come_from_the_train_split_with_hard_neighbours(tiny_world):
    examples = list(itertools.islice(training_edits(tiny_world, seed=0), 200))
    assert all(tiny_world.split_of(e.request.subject) == "train" for e in examples)
    assert all(e.request.target_new != e.request.ground_truth and e.paraphrase != e.request.prompt for e in examples)
    assert all(e.request.subject not in e.neighbour for e in examples)
    same_object = sum(e.neighbour.endswith(f" {e.request.ground_truth}.") for e in examples)
    assert same_object >= 100  # most relations have another subject with the same object
    assert list(itertools.islice(training_edits(tiny_world, seed=0), 200)) == examples
    held_out = list(itertools.islice(training_edits(tiny_world, seed=0, part="validation"), 100))
    assert all(tiny_world.split_of(e.request.subject) == "train" for e in held_out)
    assert not {e.request.subject for e in held_out} & {e.request.subject for e in examples}


@pytest.fixture(scope="module")
def trained(tiny_bridge, tiny_world):
    snapshot = weights_snapshot(tiny_bridge)
    network, report = train_mend(tiny_bridge, tiny_world, SMALL, progress=False)
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0
    return network, report


def test_training_lowers_the_edit_loss_on_unseen_training_edits(tiny_bridge, tiny_world, trained):
    network, report = trained
    assert report["edits_seen"] == 160 and len(report["step_sizes"]) == 2
    untrained = new_network(tiny_bridge, SMALL)
    sites = edited_sites(tiny_bridge, SMALL)
    examples = list(itertools.islice(training_edits(tiny_world, seed=1), 24))
    for example in examples:  # the untrained editor standardises with the same kind of statistics
        edit_losses(tiny_bridge, untrained, sites, example, observe=True)
    with torch.no_grad():
        before = torch.stack([edit_losses(tiny_bridge, untrained, sites, e)[0] for e in examples]).mean()
        after = torch.stack([edit_losses(tiny_bridge, network, sites, e)[0] for e in examples]).mean()
    assert after < 0.7 * before


def test_the_editor_kept_is_the_one_of_the_lowest_validation_loss(tiny_bridge, tiny_world, trained):
    network, report = trained
    losses = dict(report["validation_loss_by_step"])
    assert list(losses) == [20, 40] and report["kept_step"] == min(losses, key=losses.get)
    validation = list(itertools.islice(training_edits(tiny_world, SMALL.seed + 1, "validation"), 8))
    measured = validation_loss(tiny_bridge, network, edited_sites(tiny_bridge, SMALL), validation, SMALL)
    assert measured == pytest.approx(losses[report["kept_step"]], abs=1e-4)


def test_the_reference_configuration_trains_on_both_matrices(tiny_bridge, tiny_world):
    """The authors' configuration (both MLP matrices, two full-width blocks, Adam with clipping,
    no neighbour locality) trains, edits through hooks, and leaves the weights as they were."""
    hparams = dataclasses.replace(MendHparams.from_json(tuned_hparams_file("mend", "reference")), layers=(-1,),
                                  train_steps=4, batch_size=2, validation_edits=2, validation_every=2, lr=1e-4)
    snapshot = weights_snapshot(tiny_bridge)
    network, report = train_mend(tiny_bridge, tiny_world, hparams, progress=False)
    assert len(report["step_sizes"]) == 2 and len(network.editors) == 2 and report["kept_step"] in (2, 4)
    assert all(block.u.abs().max() > 0 for editor in network.editors for block in editor)  # U learns from zero
    edit = compute_mend_edit(tiny_bridge, load_edit_cases(None, tiny_world)[0].request, hparams, network)
    assert [delta.matrix().shape for delta in edit.deltas] == [
        (tiny_bridge.cfg.d_model, tiny_bridge.cfg.d_mlp), (tiny_bridge.cfg.d_mlp, tiny_bridge.cfg.d_model)]
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0


@pytest.mark.slow
def test_training_is_deterministic(tiny_bridge, tiny_world, trained):
    network, _ = trained
    again, _ = train_mend(tiny_bridge, tiny_world, dataclasses.replace(SMALL), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), again.state_dict().values()))


def test_a_mend_edit_raises_the_new_target_through_hooks(tiny_bridge, tiny_world, trained):
    network, _ = trained
    case = load_edit_cases(None, tiny_world)[0]
    snapshot = weights_snapshot(tiny_bridge)
    edit = compute_mend_edit(tiny_bridge, case.request, SMALL, network)
    assert edit.layers == (2, 3) and edit.method == "mend"
    tokens = torch.tensor([encode_prompt(tiny_bridge.tokenizer, case.request.prompt)])
    new = encode_target(tiny_bridge.tokenizer, case.request.target_new)[0]
    plain = tiny_bridge(tokens)[0, -1].log_softmax(-1)[new]
    with edit.applied(tiny_bridge):
        edited = tiny_bridge(tokens)[0, -1].log_softmax(-1)[new]
    assert edited > plain + 1.0
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0


def test_checkpoints_round_trip_and_mismatches_name_the_fix(tiny_bridge, tiny_world, tiny_llama, trained, tmp_path):
    network, report = trained
    directory = save_mend(network, SMALL, model_fingerprint(tiny_bridge), report, tmp_path / "editor")
    with pytest.raises(FileExistsError):
        save_mend(network, SMALL, model_fingerprint(tiny_bridge), report, directory)
    loaded = load_mend(tiny_bridge, SMALL, directory)
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="not this one.*workbench mend train"):
        load_mend(tiny_llama, SMALL, directory)
    with pytest.raises(ValueError, match="other hyperparameters.*workbench mend train"):
        load_mend(tiny_bridge, dataclasses.replace(SMALL, rank=8), directory)
    with pytest.raises(ValueError, match="no MEND editor.*workbench mend train"):
        Editor(tiny_bridge, "mend", SMALL, tiny_world, checkpoint=tmp_path / "missing")(
            load_edit_cases(None, tiny_world)[0].request)


def test_mend_from_the_command_line(tiny_model_dir, tmp_path, capsys):
    hparams = tmp_path / "mend.json"
    hparams.write_text(json.dumps(dataclasses.asdict(dataclasses.replace(SMALL, train_steps=5))))
    out = tmp_path / "editor"
    assert main(["mend", "train", "--model", str(tiny_model_dir), "--hparams", str(hparams), "--out", str(out)]) == 0
    assert (out / "mend.safetensors").is_file() and json.loads((out / "mend.json").read_text())["hparams"]["rank"] == 16
    assert main(["mend", "train", "--model", str(tiny_model_dir), "--hparams", str(hparams), "--out", str(out)]) == 2
    capsys.readouterr()
    assert main(["bench", "mend", "--model", str(tiny_model_dir), "--hparams", str(hparams), "--checkpoint", str(out),
                 "--n", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"mend_edit_s", "rome_edit_s", "latency_ratio"}
    assert result["latency_ratio"] == pytest.approx(result["mend_edit_s"] / result["rome_edit_s"])
    (tmp_path / "ike.json").write_text('{"k": 2}')
    assert main(["compare", "--model", str(tiny_model_dir), "--methods", "mend,ike", "--checkpoint", str(out),
                 "--n", "2", "--out", str(tmp_path / "compare")]) == 2  # the default mend hparams have no editor
    capsys.readouterr()


def test_compare_runs_mend_and_ike_beside_rome(tiny_bridge, tiny_world, trained, tmp_path):
    network, report = trained
    directory = save_mend(network, SMALL, model_fingerprint(tiny_bridge), report, tmp_path / "editor")
    cases = load_edit_cases(None, tiny_world)[:2]
    specs = parse_method_specs("rome@0,mend,ike")
    editors = {"rome": Editor(tiny_bridge, "rome", None, tiny_world),
               "mend": Editor(tiny_bridge, "mend", SMALL, tiny_world, checkpoint=directory),
               "ike": Editor(tiny_bridge, "ike", IkeHparams(k=2), tiny_world)}
    compared = compare_methods(tiny_bridge, cases, specs, lambda spec: editors[spec.method], progress=False)
    assert {label: results["layer"] for label, (results, _) in compared.items()} == {
        "rome@0": "0", "mend + neighbour locality": "2,3", "ike": "context"}
    assert all(results["n_cases"] == 2 for results, _ in compared.values())
    with pytest.raises(ValueError, match="ike edits no single layer"):
        parse_method_specs("ike@2")
    assert parse_method_specs("mend:reference")[0].hparams_file == tuned_hparams_file("mend", "reference")
    with pytest.raises(ValueError, match="no hyperparameter file .*mend-nothing.json"):
        parse_method_specs("mend:nothing")
    assert [label_directory(label) for label in ("mend + neighbour locality", "mend:reference", "rome@0")] == [
        "mend-neighbour-locality", "mend-reference", "rome@0"]


def test_mend_failures_are_clear_and_lose_nothing(tiny_bridge, tiny_world, trained):
    network, _ = trained
    request = load_edit_cases(None, tiny_world)[0].request
    snapshot = weights_snapshot(tiny_bridge)

    def poison(resid, hook):
        return resid * float("nan")

    with pytest.raises(FloatingPointError, match="nan"), \
            tiny_bridge.hooks(fwd_hooks=[(f"blocks.{tiny_bridge.cfg.n_layers - 1}.hook_resid_post", poison)]):
        compute_mend_edit(tiny_bridge, request, SMALL, network)
    with pytest.raises(ValueError, match="layer must be an integer in"):
        compute_mend_edit(tiny_bridge, request, dataclasses.replace(SMALL, layers=(2, 9)), network)
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0


@pytest.mark.parametrize("fields,message", [
    ({"matrices": ("mid",)}, "matrices are 'in' and/or 'out'"),
    ({"matrices": ("out", "out")}, "matrices are 'in' and/or 'out'"),
    ({"editor": "deep"}, "editor is 'bottleneck' or 'reference'"),
    ({"grad_clip": -1.0}, "'grad_clip': must be >= 0, got -1.0"),
    ({"validation_edits": 0}, "'validation_edits': must be >= 1, got 0"),
])
def test_bad_mend_hyperparameters_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **fields)


def test_an_interrupted_training_resumes_to_the_uninterrupted_editor(tiny_bridge, tiny_world, trained, tmp_path,
                                                                     monkeypatch):
    from workbench.core.journal import RunInterrupted
    from workbench.editing import mend_training

    network, report = trained
    checkpoint, identity = tmp_path / "editor.training.pt", {"model_fingerprint": "f", "hparams": "small"}
    real_batch_loss, steps = mend_training.batch_loss, []

    def interrupted_at_step_25(*args, observe=False, **kwargs):
        steps.extend([None] if observe else [])
        if len(steps) == 25:
            raise KeyboardInterrupt
        return real_batch_loss(*args, observe=observe, **kwargs)

    monkeypatch.setattr(mend_training, "batch_loss", interrupted_at_step_25)
    with pytest.raises(RunInterrupted, match=f"step 20 is saved in {checkpoint}.*--resume"):
        train_mend(tiny_bridge, tiny_world, SMALL, progress=False, checkpoint=checkpoint, identity=identity)
    monkeypatch.setattr(mend_training, "batch_loss", real_batch_loss)
    with pytest.raises(ValueError, match="another run \\(hparams differ\\)"):
        train_mend(tiny_bridge, tiny_world, SMALL, progress=False, checkpoint=checkpoint, resume=True,
                   identity={**identity, "hparams": "other"})
    resumed, resumed_report = train_mend(tiny_bridge, tiny_world, SMALL, progress=False, checkpoint=checkpoint,
                                         resume=True, identity=identity)
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), resumed.state_dict().values()))
    for key in ("validation_loss_by_step", "kept_step", "nll_kl_every_50_steps", "step_sizes"):
        assert resumed_report[key] == report[key]
