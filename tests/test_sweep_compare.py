"""Layer sweep and method comparison on the tiny model: real numbers, tables, charts, no overwrites."""

import json

import pytest

from tests.conftest import installed_hook_count
from workbench.app.cli import main
from workbench.editing.editor import Editor
from workbench.editing.hparams import FinetuneHparams, RomeHparams
from workbench.editing.registry import tuned_hparams_file
from workbench.evaluation.compare import parse_method_specs, write_comparison
from workbench.evaluation.runner import evaluate
from workbench.evaluation.sweep import best_layer, layer_sweep, plot_layer_sweep, sweep_score, sweep_table
from workbench.world.cases import load_edit_cases


@pytest.fixture(scope="module")
def cases(tiny_world):
    return [c for c in load_edit_cases(None, tiny_world) if c.neighbours][:6]


@pytest.fixture(scope="module")
def sweep(tiny_bridge, tiny_world, cases):
    editor = Editor(tiny_bridge, "rome", RomeHparams.from_json(tuned_hparams_file("rome", "tiny")), tiny_world)
    return layer_sweep(tiny_bridge, cases, editor, range(tiny_bridge.cfg.n_layers), progress=False)


def test_sweep_score_is_the_harmonic_mean_of_efficacy_paraphrase_and_neighbourhood():
    results = {"efficacy": {"mean": 1.0}, "paraphrase": {"mean": 0.5}, "neighborhood": {"mean": 0.5}}
    assert sweep_score(results) == pytest.approx(3 / (1 + 2 + 2))
    assert sweep_score({**results, "paraphrase": {"mean": 0.0}}) == 0.0
    assert sweep_score({**results, "paraphrase": {"mean": None}}) is None


@pytest.mark.slow
def test_layer_sweep_finds_the_tiny_models_working_layer(tmp_path, tiny_bridge, sweep):
    assert [row["layer"] for row in sweep] == list(range(tiny_bridge.cfg.n_layers))
    *measured, last = sweep
    assert all(row["n_cases"] == 6 for row in measured)
    # nothing after the last layer reads the subject's last token, so ROME refuses that layer
    assert "does not reach the prediction" in last["refused"] and last["score"] is None
    assert best_layer(sweep) == 0  # layer 0 scores best on the tiny model
    assert sweep[0]["efficacy"]["mean"] > max(row["efficacy"]["mean"] for row in measured[1:])
    written = plot_layer_sweep(sweep, tmp_path / "sweep.png")
    assert all(path.stat().st_size > 0 for path in written)
    assert sweep_table(sweep).count("\n") == len(sweep) + 1 and "| refused |" in sweep_table(sweep)
    assert installed_hook_count(tiny_bridge) == 0


@pytest.mark.slow
def test_rome_at_its_best_layer_beats_ft_l_on_neighbourhood(tiny_bridge, tiny_world, cases, sweep):
    layer = best_layer(sweep)
    ft_l = Editor(tiny_bridge, "ft-l", FinetuneHparams.from_json(tuned_hparams_file("ft-l", "default")), tiny_world)
    results, _ = evaluate(tiny_bridge, cases, lambda case: ft_l(case.request, layer), progress=False,
                          fluency_tokens=0)
    rome = next(row for row in sweep if row["layer"] == layer)
    assert rome["neighborhood"]["mean"] > results["neighborhood"]["mean"]


def test_method_specs_are_parsed_and_checked():
    specs = parse_method_specs("rome,rome@2,ft-l@auto")
    assert [(s.label, s.method, s.layer) for s in specs] == [("rome", "rome", None), ("rome@2", "rome", "2"),
                                                             ("ft-l@auto", "ft-l", "auto")]
    with pytest.raises(ValueError, match="unknown method 'serac'"):
        parse_method_specs("rome,serac")
    with pytest.raises(ValueError, match="each method spec once"):
        parse_method_specs("ft,ft")
    for spec, message in (("ft-l@../../../escape", "layer number or 'auto'"), ("mend:../../x", "a variant")):
        with pytest.raises(ValueError, match=message):  # a label never becomes a path outside --out
            parse_method_specs(spec)


def test_compare_command_writes_table_chart_and_per_method_results(tmp_path, capsys):
    args = ["compare", "--model", "tiny", "--methods", "rome@0,ft@1", "--n", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert set(table) == {"rome@0", "ft@1"}
    assert table["ft@1"]["layer"] == "1" and table["rome@0"]["n_cases"] == 2
    for label in table:
        assert (tmp_path / label / "results.json").is_file()
        assert len((tmp_path / label / "cases.jsonl").read_text().splitlines()) == 2
        assert "NaN" not in (tmp_path / label / "cases.jsonl").read_text()  # strict JSON
        assert table[label]["fluency"]["n"] == 2
    markdown = (tmp_path / "comparison.md").read_text()
    assert markdown.startswith("| method | layer | efficacy") and "| rome@0 |" in markdown
    assert (tmp_path / "comparison.png").stat().st_size > 0
    capsys.readouterr()
    before = (tmp_path / "comparison.md").read_bytes()
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "comparison.md").read_bytes() == before
    assert "| method (counterfact) | S | ES | PS | NS |" in markdown  # the standard scores' table follows
    assert "| no edit |" in markdown.split("| method (counterfact)")[1]


def test_compare_can_skip_fluency(tmp_path):
    args = ["compare", "--model", "tiny", "--methods", "ft-l", "--n", "2", "--fluency-tokens", "0", "--out",
            str(tmp_path)]
    assert main(args) == 0
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert table["ft-l"]["fluency"]["n"] == 0 and table["ft-l"]["scores"]["ES"] is not None
    assert "| ft-l | 0 |" in (tmp_path / "comparison.md").read_text()


def test_write_comparison_checks_every_file_before_writing_any(tmp_path):
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "cases.jsonl").write_text("mine\n")
    results = {"n_cases": 0}
    with pytest.raises(FileExistsError, match="cases.jsonl"):
        write_comparison(tmp_path, {"ft": (results, [])})
    assert not (tmp_path / "comparison.md").exists()
    assert (tmp_path / "ft" / "cases.jsonl").read_text() == "mine\n"


def test_a_sweep_refuses_a_case_too_long_for_the_context_before_any_layer(tiny_bridge, tiny_world, cases):
    import dataclasses

    from workbench.core.cases import Probe

    long_probe = Probe("Karo Velin was born in" + " and then" * 80, "Dusmor")
    too_long = dataclasses.replace(cases[0], paraphrases=(*cases[0].paraphrases, long_probe))
    editor = Editor(tiny_bridge, "ft-l", facts=tiny_world)
    with pytest.raises(ValueError, match="more than the model's context of 128"):
        layer_sweep(tiny_bridge, [too_long], editor, range(tiny_bridge.cfg.n_layers), progress=False)
