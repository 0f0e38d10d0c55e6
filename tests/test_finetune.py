"""FT and FT-L: the edit takes, FT-L stays in its L-infinity ball, the model is never written."""

import pytest

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.edit import EditRequest
from workbench.editing.finetune import compute_finetune_edit
from workbench.editing.hparams import FinetuneHparams
from workbench.model.tokens import score_targets
from workbench.world import export_edit_cases


@pytest.fixture(scope="module")
def case(tiny_world):
    return next(c for c in export_edit_cases(tiny_world, "test") if c["subject_kind"] == "person")


def _request(case):
    return EditRequest(case["prompt"], case["subject"], case["target_new"], case["ground_truth"])


def test_ft_makes_the_edit_take_without_writing_a_weight(tiny_bridge, case):
    before = weights_snapshot(tiny_bridge)
    edit = compute_finetune_edit(tiny_bridge, _request(case), FinetuneHparams(layer=1, steps=40, lr=5e-3))
    assert weights_equal(tiny_bridge, before)
    assert edit.method == "ft" and installed_hook_count(tiny_bridge) == 0
    with edit.applied(tiny_bridge):
        scores = score_targets(tiny_bridge, tiny_bridge.tokenizer, [case["prompt"]] * 2,
                               [case["target_new"], case["ground_truth"]])
    assert scores.log_prob[0] > scores.log_prob[1]
    assert edit.timings["losses"][-1] < edit.timings["losses"][0]


def test_ft_l_stays_inside_its_norm_constraint(tiny_bridge, case):
    edit = compute_finetune_edit(tiny_bridge, _request(case),
                                 FinetuneHparams(layer=1, steps=10, lr=5e-3, norm_constraint=1e-3))
    change = edit.deltas[0].matrix()
    assert edit.method == "ft-l" and change.abs().max() <= 1e-3 + 1e-9 and change.abs().max() > 0


def test_nan_during_fine_tuning_is_a_clear_error(tiny_bridge, case):
    def poison(resid, hook):
        return resid * float("nan")

    with pytest.raises(FloatingPointError, match="fine-tuning produced a loss of nan"), \
            tiny_bridge.hooks(fwd_hooks=[("blocks.2.hook_resid_post", poison)]):
        compute_finetune_edit(tiny_bridge, _request(case), FinetuneHparams(layer=1))
    assert installed_hook_count(tiny_bridge) == 0
