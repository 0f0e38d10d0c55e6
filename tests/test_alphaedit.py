"""AlphaEdit: the null-space projection and the paper's update on small cases, and edits of the tiny
model that keep the keys of the corpus and of the earlier edits of a sequence."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.sites import EditSite
from workbench.editing.alphaedit import AlphaEditState, NullSpaces, alphaedit_solver, null_space_projection
from workbench.editing.editor import Editor
from workbench.editing.hparams import AlphaEditHparams
from workbench.editing.registry import method_hparams
from workbench.evaluation.metrics import measure
from workbench.world.cases import load_edit_cases

SITE = EditSite(0, "mlp", "in out", "key", "out")


class FixedMoments:
    """Stands for ``KeyStatistics``: one given moment at every layer."""

    def __init__(self, moment):
        self._moment = moment

    def moment(self, layer):
        return self._moment


def small_case(seed: int = 0):
    """A 6-dimensional key space whose moment has three large eigenvalues and three tiny ones."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    values = torch.tensor([5.0, 4.0, 3.0, 1e-3, 2e-3, 3e-3], dtype=torch.float64)
    return basis, values, basis @ torch.diag(values) @ basis.T, generator


def test_the_projection_keeps_exactly_the_eigenvectors_below_the_threshold():
    basis, values, moment, _ = small_case()
    projection = null_space_projection(moment, 2e-2)
    torch.testing.assert_close(projection, projection.T)
    torch.testing.assert_close(projection @ projection, projection)
    assert round(projection.trace().item()) == 3
    for vector, value in zip(basis.T, values):
        expected = vector if value < 2e-2 else torch.zeros_like(vector)
        torch.testing.assert_close(projection @ vector, expected)


def test_the_update_is_the_papers_and_preserves_the_corpus_and_the_earlier_keys():
    basis, _, moment, generator = small_case()
    null = basis[:, 3:]  # the null space of the moment
    keys = (null @ torch.randn(3, 1, generator=generator, dtype=torch.float64)).T  # [B = 1, d]
    earlier = (null @ torch.randn(3, 1, generator=generator, dtype=torch.float64)).T
    residual = torch.randn(1, 4, generator=generator, dtype=torch.float64)  # [B, d_out]
    hparams = AlphaEditHparams(layer=0, span=1, nullspace_threshold=2e-2, l2_weight=1e-8)
    state = AlphaEditState(NullSpaces(FixedMoments(moment), 2e-2), {0: earlier.T @ earlier})
    delta = alphaedit_solver(hparams, state)(SITE, keys) @ residual  # key space [d, d_out]
    # The paper's Delta P = R K^T P (K_p K_p^T P + K K^T P + alpha I)^-1, in the [d_out, d] layout.
    projection = null_space_projection(moment, 2e-2)
    k, kp = keys.T, earlier.T
    paper = residual.T @ k.T @ projection @ torch.linalg.inv(
        kp @ kp.T @ projection + k @ k.T @ projection + 1e-8 * torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(delta, paper.T)
    torch.testing.assert_close(projection @ delta, delta)  # the update lies in the null space
    assert (basis[:, :3].T @ delta).abs().max() < 1e-6 * delta.abs().max()  # the corpus's key directions see no change
    torch.testing.assert_close(keys @ delta, residual, atol=1e-5, rtol=1e-5)  # the request is written
    assert (earlier @ delta).abs().max() < 1e-5  # the earlier edit's key keeps its output
    without = alphaedit_solver(hparams, dataclasses.replace(state, earlier_keys={}))(SITE, keys) @ residual
    assert (earlier @ without).abs().max() > 1e-2  # which it would not keep without being told


@pytest.fixture(scope="module")
def cases(tiny_world):
    by_subject = {case.request.subject: case for case in load_edit_cases(None, tiny_world)
                  if case.request.ground_truth}
    return list(by_subject.values())


def test_an_edit_of_the_tiny_model_works_lies_in_the_null_spaces_and_writes_no_weight(tiny_bridge, tiny_world,
                                                                                        cases):
    editor = Editor(tiny_bridge, "alphaedit", facts=tiny_world)
    snapshot = weights_snapshot(tiny_bridge)
    edit = editor(cases[0].request)
    assert edit.method == "alphaedit" and edit.layers == editor.hparams.layers()
    for delta in edit.deltas:
        projection = editor.prepared().null_spaces.projection(delta.site.layer).float()
        torch.testing.assert_close(projection @ delta.matrix(), delta.matrix(), atol=1e-5, rtol=1e-4)
        assert edit.update_keys[delta.site.layer].shape == (1, tiny_bridge.cfg.d_mlp)
    with edit.applied(tiny_bridge):
        after = measure(tiny_bridge, cases[0], fluency_tokens=0)
    assert after.edit_new / after.new_tokens > after.edit_true / after.true_tokens
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0


def test_an_edit_after_another_keeps_the_earlier_edits_keys(tiny_bridge, tiny_world, cases):
    hparams = dataclasses.replace(method_hparams("alphaedit"), span=1)
    editor = Editor(tiny_bridge, "alphaedit", hparams, facts=tiny_world)
    first = editor(cases[0].request)
    state = editor.method.prepared_after(editor.prepared(), [first])
    keys = first.update_keys[hparams.layer].double()
    torch.testing.assert_close(state.earlier_keys[hparams.layer], keys.T @ keys)
    after = editor(cases[1].request, earlier=[first])
    alone = editor(cases[1].request)
    moved = {name: (keys.float() @ edit.deltas[0].matrix()).norm().item() for name, edit in
             (("after", after), ("alone", alone))}
    assert moved["after"] < 0.5 * moved["alone"], moved
    assert installed_hook_count(tiny_bridge) == 0


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="nullspace_threshold"):
        AlphaEditHparams(layer=1, nullspace_threshold=0.0)
    with pytest.raises(ValueError, match="l2_weight"):
        AlphaEditHparams(layer=1, l2_weight=-1.0)
