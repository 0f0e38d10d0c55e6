"""The dashboard's model side: the shared model's lock and per-session edits, edit inspection,
activation changes, export from a session's history, progress reporting and the comparison CSV."""

import csv
import io
import threading
import time

import numpy as np
import pytest

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.app.cli import main
from workbench.app.dashboard import launch
from workbench.app.dashboard.activations import activation_change, site_changes
from workbench.app.dashboard.inspection import inspect_edit, prediction_rows, traces_before_after
from workbench.app.dashboard.session import EditHistory, SharedModel
from workbench.core.progress import reported
from workbench.editing.hparams import IkeHparams, RomeHparams
from workbench.editing.registry import tuned_hparams_file
from workbench.evaluation.compare import compare_methods, comparison_csv, parse_method_specs
from workbench.model.tokens import score_targets, subject_token_span
from workbench.tracing.trace import TraceConfig
from workbench.world.cases import load_edit_cases


@pytest.fixture(scope="module")
def shared():
    return SharedModel.load("tiny")


@pytest.fixture(scope="module")
def case(shared):
    return load_edit_cases(None, shared.world)[0]


@pytest.fixture(scope="module")
def rome_edit(shared, case):
    with shared.use():
        return shared.editor("rome", RomeHparams.from_json(tuned_hparams_file("rome", "tiny")))(case.request, 0)


def p_target(model, request) -> float:
    return score_targets(model, model.tokenizer, [request.prompt], [request.target_new]).log_prob.exp().item()


def test_a_session_never_sees_another_sessions_edit_even_while_both_run(shared, rome_edit):
    request = rome_edit.request
    with shared.use() as model:
        plain = p_target(model, request)
    a_inside, b_done, seen = threading.Event(), threading.Event(), {}

    def session_a():
        with shared.use([rome_edit]) as model:
            a_inside.set()
            seen["a"] = p_target(model, request)
            time.sleep(0.5)  # B asks for the model meanwhile
            seen["a_saw_b_finish"] = b_done.is_set()

    def session_b():
        a_inside.wait()
        with shared.use() as model:
            seen["b"] = p_target(model, request)
        b_done.set()

    threads = [threading.Thread(target=session_a), threading.Thread(target=session_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen["a"] > 0.5 > plain  # A's edit works for A ...
    assert seen["b"] == pytest.approx(plain, abs=1e-6)  # ... and B, served while A held the model, never sees it
    assert not seen["a_saw_b_finish"]  # B waited for A's use to end
    assert installed_hook_count(shared.model) == 0


def test_inspecting_an_edit_measures_before_and_after_and_leaves_the_model_as_it_was(shared, case, rome_edit):
    snapshot = weights_snapshot(shared.model)
    with shared.use() as model:
        inspection = inspect_edit(model, rome_edit, case)
    assert weights_equal(shared.model, snapshot) and installed_hook_count(shared.model) == 0
    rows = prediction_rows(inspection)
    assert [row["kind"] for row in rows][:2] == ["edit", "paraphrase"]
    assert len(rows) == 1 + sum(len(getattr(case, group)) for group in ("paraphrases", "neighbours", "reverse",
                                                                         "portability"))
    assert rows[0]["p(expected) after"] > 0.5 > rows[0]["p(expected) before"]
    assert inspection.metrics["efficacy"] == 1.0
    assert 0.0 <= inspection.metrics["neighborhood"] <= 1.0
    [site] = inspection.sites
    assert site.layer == 0 and site.rank == 1
    assert site.weight_change_norm > 0 and site.value_change_norm > 0
    resid, mlp = inspection.activations.changes["resid"], inspection.activations.changes["mlp"]
    n_layers = shared.model.cfg.n_layers
    assert resid.shape == mlp.shape == (len(inspection.activations.tokens), n_layers)
    # block 0's attention runs before the edited MLP, so its residual stream changes by the MLP's change alone
    np.testing.assert_allclose(resid[:, 0], mlp[:, 0], rtol=1e-4, atol=1e-5)
    last_subject_row = subject_token_span(shared.model.tokenizer, case.request.prompt, case.request.subject)[1] - 2
    assert np.argmax(mlp[:, 0]) == last_subject_row  # rows omit BOS; ROME's key is the subject's last token
    assert resid[:, -1].max() > 0


def test_changes_stack_on_a_sessions_earlier_edits(shared, case, rome_edit):
    with shared.use() as model:
        alone = activation_change(model, case.request.prompt, rome_edit)
        on_itself = activation_change(model, case.request.prompt, rome_edit, base_edits=[rome_edit])
        [site] = site_changes(model, rome_edit, base_edits=[rome_edit])
    assert not np.allclose(alone.changes["mlp"], on_itself.changes["mlp"])
    assert site.value_change_norm > 0


def test_an_in_context_edit_is_compared_on_the_prompts_own_tokens(shared, case):
    with shared.use() as model:
        edit = shared.editor("ike", IkeHparams(k=2))(case.request)
        change = activation_change(model, case.request.prompt, edit)
        assert site_changes(model, edit) == []
        with pytest.raises(ValueError, match="in-context edit changes the prompt"):
            traces_before_after(model, edit)
    plain_tokens = shared.model.tokenizer(case.request.prompt, add_special_tokens=False)["input_ids"]
    # the prompt's first token merges with the context's trailing space; the rest align
    assert change.tokens == [shared.model.tokenizer.decode([t]) for t in plain_tokens[1:]]
    assert change.changes["resid"].max() > 0


def test_traces_before_and_after_follow_the_edit(shared, rome_edit):
    with shared.use() as model:
        before, after = traces_before_after(model, rome_edit, config=TraceConfig(samples=2, kinds=("mlp",)))
    assert before.answer == rome_edit.request.ground_truth and after.answer == rome_edit.request.target_new
    assert after.clean_prob > 0.5  # the edited model believes the new target, as its trace's clean run shows
    assert before.grids["mlp"].shape == after.grids["mlp"].shape
    assert not np.allclose(before.grids["mlp"], after.grids["mlp"])


def test_history_turns_edits_off_and_exports_only_the_active_ones(shared, rome_edit, tmp_path):
    history = EditHistory()
    history.add(rome_edit)
    history.add(rome_edit)
    history.set_active(1, False)
    assert history.active_edits() == [rome_edit]
    written = history.export(shared, "edited", tmp_path)
    assert written == tmp_path / "edited" and (written / "edits.json").is_file()
    with pytest.raises(FileExistsError):
        history.export(shared, "edited", tmp_path)
    with pytest.raises(ValueError, match="name the new model directory"):
        history.export(shared, " ", tmp_path)
    for escape in ("../outside", str(tmp_path / "absolute"), "..", "a/b"):
        with pytest.raises(ValueError, match="give a directory name, not a path"):
            history.export(shared, escape, tmp_path)
    assert not (tmp_path.parent / "outside").exists()


def test_progress_goes_to_a_callback_once_before_and_after_every_item():
    calls = []
    assert list(reported([3, 4], "counting", lambda *args: calls.append(args))) == [3, 4]
    assert calls == [("counting", 0, 2), ("counting", 1, 2), ("counting", 2, 2)]


def test_the_comparison_csv_has_a_row_per_method_with_the_measured_numbers(shared, case):
    with shared.use() as model:
        compared = compare_methods(model, [case], parse_method_specs("ft-l"),
                                   lambda spec: shared.editor(spec.method, spec.hparams_file), progress=False)
    table = {label: results for label, (results, _) in compared.items()}
    [row] = list(csv.DictReader(io.StringIO(comparison_csv(table))))
    assert row["method"] == "ft-l" and row["efficacy_n"] == "1"
    assert float(row["efficacy_mean"]) == table["ft-l"]["efficacy"]["mean"]
    assert float(row["median_edit_seconds"]) == pytest.approx(table["ft-l"]["median_edit_seconds"])


def test_the_dashboard_command_serves_the_app_with_the_chosen_model(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(launch.os, "execve", lambda path, command, env: calls.append((path, command, env)))
    assert main(["dashboard", "--model", "tiny", "--port", "8600", "--headless"]) == 0
    [(path, command, env)] = calls  # the command becomes the server: stopping it stops the server
    app = launch.app_path()
    assert path == command[0] and command[command.index("run") + 1] == str(app) and app.name == "app.py"
    assert (app.parent / ".streamlit" / "config.toml").is_file() and (app.parent / "app_pages" / "edit.py").is_file()
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.headless") + 1] == "true"
    assert env[launch.MODEL_ENV] == "tiny"
    monkeypatch.setattr(launch, "files", lambda package: tmp_path)
    with pytest.raises(FileNotFoundError, match="app.py is missing: reinstall"):
        launch.app_path()
