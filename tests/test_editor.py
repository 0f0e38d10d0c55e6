"""The Editor: every method through one entry point; bad input is refused and loses nothing."""

import math

import pytest

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.edit import EditRequest
from workbench.editing.editor import Editor
from workbench.editing.hparams import RomeHparams
from workbench.editing.registry import LAYER_METHODS, tuned_hparams_file
from workbench.world.cases import load_edit_cases


@pytest.fixture(scope="module")
def case(tiny_world):
    return next(c for c in load_edit_cases(None, tiny_world) if c.request.subject.count(" ") == 1)


def _editor(model, world, method):
    hparams = RomeHparams.from_json(tuned_hparams_file("rome", "tiny")) if method == "rome" else None
    return Editor(model, method, hparams, world)


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_every_method_edits_at_the_layer_asked_for(tiny_bridge, tiny_world, case, method):
    edit = _editor(tiny_bridge, tiny_world, method)(case.request, layer=1)
    expected = (0, 1) if method in ("memit", "alphaedit") else (1,)  # a span of 3 ends at the layer, clipped at 0
    assert edit.method == method and edit.layers == expected
    assert all(math.isfinite(v) for v in edit.deltas[0].matrix().flatten().tolist()[:100])


def poison(resid, hook):  # a numerical blow-up downstream of the edited layer
    return resid * float("nan")


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_failures_are_clear_errors_and_leave_weights_and_hooks_as_they_were(tiny_bridge, tiny_world, case, method):
    editor = _editor(tiny_bridge, tiny_world, method)
    snapshot = weights_snapshot(tiny_bridge)
    with pytest.raises(ValueError, match="layer must be an integer in"):
        editor(case.request, layer=tiny_bridge.cfg.n_layers)
    with pytest.raises(ValueError, match="must be 'auto' or a layer number"):
        editor(case.request, layer="middle")
    with pytest.raises(FloatingPointError, match="nan"), \
            tiny_bridge.hooks(fwd_hooks=[(f"blocks.{tiny_bridge.cfg.n_layers - 1}.hook_resid_post", poison)]):
        editor(case.request, layer=0)
    assert weights_equal(tiny_bridge, snapshot)
    assert installed_hook_count(tiny_bridge) == 0


@pytest.mark.parametrize(("fields", "message"), [
    (("Karo Velin was born in", "Mira Tosk", "Dusmor"), "does not occur in prompt"),
    (("Karo Velin was born in", "Karo Velin", "  "), "target_new must be a non-empty string"),
    (("Karo Velin was born in", "Karo Velin", "Dusmor", "Dusmor"), "equals the current answer"),
])
def test_bad_requests_never_reach_the_model(fields, message):
    with pytest.raises(ValueError, match=message):
        EditRequest(*fields)


def test_unknown_method_and_auto_layer(tiny_bridge, tiny_world, case):
    with pytest.raises(ValueError, match="unknown editing method 'serac'"):
        Editor(tiny_bridge, "serac")
    edit = _editor(tiny_bridge, tiny_world, "ft")(case.request, layer="auto")
    assert edit.layers == (0,)  # the locator's choice on the tiny model (README: layer 0)


@pytest.mark.parametrize("method", ["rome", "memit", "ft", "ft-l", "ike", "mend"])
def test_a_prompt_or_target_longer_than_the_context_is_refused_before_any_work(tiny_bridge, tiny_world, method):
    from workbench.tracing.trace import trace_fact

    snapshot, padding = weights_snapshot(tiny_bridge), " and then" * 80
    too_long = [EditRequest("Karo Velin was born in" + padding, "Karo Velin", "Dusmor"),
                EditRequest("Karo Velin was born in", "Karo Velin", "Dusmor" + padding)]
    editor = Editor(tiny_bridge, method, facts=tiny_world, checkpoint="no-editor-is-needed-to-refuse")
    for request in too_long:
        with pytest.raises(ValueError, match="more than the model's context of 128"):
            editor(request, 0 if method in LAYER_METHODS else None)
    with pytest.raises(ValueError, match="more than the model's context of 128"):
        trace_fact(tiny_bridge, too_long[0].prompt, "Karo Velin")
    assert weights_equal(tiny_bridge, snapshot) and installed_hook_count(tiny_bridge) == 0
