import json

from workbench.cli import main


def test_model_info_json_reports_recall(capsys):
    assert main(["model", "info", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "gpt2"
    assert info["recall_corpus"] >= 0.95 and "recall_heldout" in info


def test_world_export_writes_cases_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "cases.json"
    assert main(["world", "export", "--preset", "tiny", "--split", "test", "--out", str(out)]) == 0
    cases = json.loads(out.read_text())
    assert cases and {c["split"] for c in cases} == {"test"}
    before = out.read_bytes()
    assert main(["world", "export", "--preset", "tiny", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["world", "export", "--preset", "tiny", "--out", str(out), "--force"]) == 0
    assert len(json.loads(out.read_text())) > len(cases)


def test_demo_shows_beliefs_of_the_model(capsys):
    assert main(["demo", "--model", "tiny", "--facts", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("world says") == 3 and "top next tokens" in out


def test_missing_model_path_is_a_clear_error(tmp_path, capsys):
    assert main(["model", "info", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_trace_locate_and_average_commands(tmp_path, capsys, tiny_world):
    from workbench.world import export_edit_cases

    case = next(c for c in export_edit_cases(tiny_world, "test") if c["relation"] == "born_in")
    out, plot = tmp_path / "trace.json", tmp_path / "trace.png"
    assert main(["trace", "--model", "tiny", "--prompt", case["prompt"], "--subject", case["subject"],
                 "--samples", "2", "--window", "2", "--out", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "resid:" in printed and "mlp:" in printed and "locator: layer" in printed
    saved = json.loads(out.read_text())
    assert len(saved["grids"]["attn"]) == len(saved["tokens"]) and plot.exists() and plot.with_suffix(".svg").exists()

    assert main(["trace", "average", "--model", "tiny", "--n", "2", "--samples", "2", "--window", "2",
                 "--out", str(tmp_path / "avg.json")]) == 0
    average = json.loads((tmp_path / "avg.json").read_text())
    assert average["n_facts"] == 2 and "location" in average
    capsys.readouterr()

    assert main(["locate", "--model", "tiny", "--n", "2", "--samples", "2", "--json"]) == 0
    location = json.loads(capsys.readouterr().out)
    assert location["key_hook"] == f"blocks.{location['layer']}.mlp.hook_post"

    assert main(["trace", "--model", "tiny", "--prompt", "Nobody was born in", "--subject", "Somebody"]) == 2
    assert "does not occur in prompt" in capsys.readouterr().err


def test_edit_command_shows_predictions_before_and_after(capsys, tiny_world):
    from pathlib import Path

    from workbench.world import export_edit_cases

    case = next(c for c in export_edit_cases(tiny_world, "test") if c["subject_kind"] == "person")
    hparams = Path(__file__).parents[1] / "hparams" / "rome-tiny.json"
    assert main(["edit", "--model", "tiny", "--prompt", case["prompt"], "--subject", case["subject"],
                 "--target-new", case["target_new"], "--layer", "0", "--hparams", str(hparams), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layer"] == 0 and result["request"]["ground_truth"] == case["ground_truth"]
    kinds = [row["kind"] for row in result["before"]]
    assert kinds[0] == "edit" and "paraphrase" in kinds and "neighbour" in kinds
    assert result["after"][0]["p_target_new"] > result["before"][0]["p_target_new"]
    assert main(["edit", "--model", "tiny", "--prompt", case["prompt"], "--subject", case["subject"],
                 "--target-new", case["ground_truth"], "--layer", "0"]) == 2
    assert "equals the current answer" in capsys.readouterr().err


def test_edit_command_runs_the_fine_tuning_baselines(capsys, tiny_world):
    from workbench.world import export_edit_cases

    case = next(c for c in export_edit_cases(tiny_world, "test") if c["subject_kind"] == "person")
    for method in ("ft", "ft-l"):
        assert main(["edit", "--method", method, "--model", "tiny", "--prompt", case["prompt"],
                     "--subject", case["subject"], "--target-new", case["target_new"], "--layer", "1", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["method"] == method and result["layer"] == 1
