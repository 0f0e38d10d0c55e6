"""The public API: the README's script runs (on the tiny model) and does what it says."""

import re
from pathlib import Path

import pytest

import workbench
from tests.conftest import installed_hook_count, weights_equal, weights_snapshot

README = Path(__file__).parents[1] / "README.md"
MARKER = "<!-- tests/test_api.py runs this script -->"


def readme_script() -> str:
    text = README.read_text()
    assert MARKER in text, "the README lost its API script"
    return re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S).group(1)


def test_readme_script_runs_on_the_tiny_model(capsys):
    script = readme_script()
    assert 'wb.load_model("default")' in script and "n=20" in script
    namespace = {}
    exec(script.replace('wb.load_model("default")', 'wb.load_model("tiny")').replace("n=20", "n=2"), namespace)
    model, edit, results = namespace["model"], namespace["edit"], namespace["results"]
    assert edit.layers == (namespace["location"].site.layer,)
    assert results["n_cases"] == 2 and 0.0 <= results["efficacy"]["mean"] <= 1.0
    assert len(results["cases"]) == 2
    assert installed_hook_count(model) == 0
    assert "efficacy" in capsys.readouterr().out


def test_public_names_resolve_and_unknown_names_fail():
    for name in workbench.__all__:
        assert getattr(workbench, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'rome'"):
        workbench.rome  # noqa: B018


def test_api_export_and_commit_round_trip(tmp_path):
    import torch

    model = workbench.load_model("tiny")
    case = workbench.edit_cases(model)[0]
    edit = workbench.edit(model, case.request, method="ft", layer=0)
    snapshot = weights_snapshot(model)
    handle = workbench.commit(model, [edit])
    assert not weights_equal(model, snapshot)
    handle.revert()
    assert weights_equal(model, snapshot)
    out = workbench.export(model, [edit], tmp_path / "edited")
    tokens = torch.tensor([[0, 5, 6, 7]])
    with edit.applied(model), torch.no_grad():
        torch.testing.assert_close(workbench.load_model(out)(tokens), model(tokens), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not loaded with workbench.load_model"):
        workbench.export(torch.nn.Linear(1, 1), [edit], tmp_path / "other")


def test_api_evaluates_a_sequence_of_edits_in_batches():
    model = workbench.load_model("tiny")
    snapshot = weights_snapshot(model)
    rows = workbench.evaluate_sequence(model, method="memit", n=4, batch_size=2, progress=False)
    assert [row["edits"] for row in rows] == [0, 2, 4]  # every 2: n // 10 rounded to whole batches, at least one
    assert rows[-1]["retention"]["n"] == 4 and rows[0]["recall_corpus"]["n"] > 0
    assert weights_equal(model, snapshot) and installed_hook_count(model) == 0
