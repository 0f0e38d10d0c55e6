import json
import os

from workbench.app.cli import main
from workbench.editing.registry import tuned_hparams_file


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
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # written atomically, yet not private
    before = out.read_bytes()
    assert main(["world", "export", "--preset", "tiny", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["world", "export", "--preset", "tiny", "--out", str(out), "--force"]) == 0
    assert len(json.loads(out.read_text())) > len(cases)
    capsys.readouterr()
    assert main(["world", "export", "--preset", "tiny", "--out", str(tmp_path), "--force"]) == 2
    assert "is a directory; give the path of a file" in capsys.readouterr().err
    dangling = tmp_path / "link.json"
    dangling.symlink_to(tmp_path / "nowhere" / "target.json")
    assert main(["world", "export", "--preset", "tiny", "--out", str(dangling)]) == 2
    assert "already exists" in capsys.readouterr().err and dangling.is_symlink()


def test_an_export_to_a_dangling_symlink_is_refused_before_the_edit(tmp_path, capsys):
    dangling = tmp_path / "edited"
    dangling.symlink_to(tmp_path / "nowhere")
    args = ["edit", "--model", "tiny", "--method", "ft-l", "--prompt", "Karo Velin was born in", "--subject",
            "Karo Velin", "--target-new", "Dusmor", "--layer", "0", "--export", str(dangling)]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "already exists" in error and "Traceback" not in error and dangling.is_symlink()


def test_demo_tells_the_whole_story_on_one_fact(tmp_path, capsys):
    assert main(["demo", "--model", "tiny", "--facts", "2", "--plot", str(tmp_path / "trace.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("world says") == 2
    for step in ("2. Causal tracing of", "3. The locator picks layer 0", "4. ROME at layer 0", "[edit]", "[paraphrase]",
                 "[neighbour]", "efficacy:", "fluency:", "The model's weights are unchanged"):
        assert step in out
    assert (tmp_path / "trace.png").stat().st_size > 0


def test_bench_rome_reports_both_sides(capsys):
    hparams = tuned_hparams_file("rome", "tiny")
    assert main(["bench", "rome", "--model", "tiny", "--n", "2", "--hparams", str(hparams), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_edits"] == 2 and result["layer"] == 0
    assert result["key_statistics_s"] > 0 and result["median_edit_s"] > 0 and result["median_eval_s"] > 0
    assert result["edits_per_statistics"] == result["key_statistics_s"] / result["median_edit_s"]


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
    out.unlink()
    plot.with_suffix(".svg").write_text("a user's figure")
    assert main(["trace", "--model", "tiny", "--prompt", case["prompt"], "--subject", case["subject"],
                 "--samples", "2", "--out", str(out), "--plot", str(plot)]) == 2
    assert "trace.png already exists" in capsys.readouterr().err and not out.exists()  # refused before any work
    assert plot.with_suffix(".svg").read_text() == "a user's figure"

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
    from workbench.world import export_edit_cases

    case = next(c for c in export_edit_cases(tiny_world, "test") if c["subject_kind"] == "person")
    hparams = tuned_hparams_file("rome", "tiny")
    assert main(["edit", "--model", "tiny", "--prompt", case["prompt"], "--subject", case["subject"],
                 "--target-new", case["target_new"], "--layer", "0", "--hparams", str(hparams), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layers"] == [0] and result["request"]["ground_truth"] == case["ground_truth"]
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
        assert result["method"] == method and result["layers"] == [1]


def test_eval_refuses_an_existing_output_before_any_work(tmp_path, capsys):
    (tmp_path / "cases.jsonl").write_text("a user's file\n")
    missing_model = tmp_path / "no-such-model"  # loading it would fail: the refusal must come first
    assert main(["eval", "--model", str(missing_model), "--method", "rome", "--out", str(tmp_path)]) == 2
    assert "cases.jsonl already exists" in capsys.readouterr().err
    assert (tmp_path / "cases.jsonl").read_text() == "a user's file\n"
