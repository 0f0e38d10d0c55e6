"""Runs over many cases: kept on disk as they go, resumed after a real interruption, sharded over
Ray workers (a killed worker's shard is done again), all giving the single-process run's files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.app.cli import main
from workbench.app.runs import RunOptions, run_specs
from workbench.core.journal import JOURNAL_FILE, CaseJournal
from workbench.evaluation.compare import MethodSpec
from workbench.model.handle import open_model
from workbench.world.cases import load_edit_cases

N_CASES = 8
EVAL = ["eval", "--method", "ft-l", "--model", "tiny", "--n", str(N_CASES)]


def read_run(out: Path) -> tuple[dict, list[dict]]:
    """results.json and cases.jsonl of a run, less what is a measurement of time."""
    results = json.loads((out / "results.json").read_text())
    results.pop("median_edit_seconds")
    records = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("edit_seconds")
    return results, records


def assert_same_run(got: tuple[dict, list[dict]], expected: tuple[dict, list[dict]], tolerance: float) -> None:
    """The same cases in the same order with the same metrics (to ``tolerance``)."""
    (results, records), (expected_results, expected_records) = got, expected
    assert [r["case_id"] for r in records] == [r["case_id"] for r in expected_records]
    assert results["n_cases"] == expected_results["n_cases"] == len(records)
    for record, expected_record in zip(records, expected_records):
        assert record.keys() == expected_record.keys()
        for name, value in expected_record["metrics"].items():
            assert record["metrics"][name] == pytest.approx(value, abs=tolerance), (record["case_id"], name)
    for name in ("efficacy", "paraphrase", "neighborhood", "same_subject"):
        assert results[name]["mean"] == pytest.approx(expected_results[name]["mean"], abs=tolerance)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir) -> tuple[dict, list[dict]]:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert main([*EVAL, "--out", str(out)]) == 0
    assert not (out / JOURNAL_FILE).exists()  # removed once the result files hold everything
    return read_run(out)


def test_a_run_interrupted_by_a_signal_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, capsys):
    out = tmp_path / "run"
    journal = out / JOURNAL_FILE
    # A shell that starts pytest in the background ignores SIGINT, and the child would inherit that.
    process = subprocess.Popen([sys.executable, "-m", "workbench.app.cli", *EVAL, "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (journal.is_file() and journal.read_text().count("\n") >= 3):  # the settings and two cases
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and str(journal) in stderr
    assert not (out / "results.json").exists()
    kept = journal.read_text().splitlines()
    assert 3 <= len(kept) <= N_CASES  # every line whole; some cases are left to do
    for line in kept:
        json.loads(line)

    assert main([*EVAL, "--out", str(out)]) == 2  # not started over by accident
    assert "--resume" in capsys.readouterr().err
    assert main([*EVAL, "--out", str(out), "--resume"]) == 0
    assert "done before" in capsys.readouterr().err
    assert_same_run(read_run(out), uninterrupted, tolerance=1e-6)
    assert not journal.exists()


def test_resume_refuses_other_settings_and_a_missing_or_damaged_journal(tmp_path, capsys):
    out = tmp_path / "run"
    journal = CaseJournal(out / JOURNAL_FILE, {"command": "eval", "n_cases": 8, "methods": ["ft-l"]})
    journal.record(0, {"ft-l": {"metrics": {"efficacy": float("nan")}}})
    assert journal.done[0]["ft-l"]["metrics"]["efficacy"] is None  # kept as JSON keeps it
    with pytest.raises(ValueError, match="methods, n_cases differ"):
        CaseJournal(out / JOURNAL_FILE, {"command": "eval", "n_cases": 9, "methods": ["rome"]}, resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        CaseJournal(out / JOURNAL_FILE, {"command": "eval"})
    with pytest.raises(FileNotFoundError, match="no interrupted run"):
        CaseJournal(tmp_path / "elsewhere" / JOURNAL_FILE, {}, resume=True)

    path = out / JOURNAL_FILE
    path.write_text(path.read_text() + '{"index": 1, "rows": {"ft-')  # a line cut short by a kill
    reopened = CaseJournal(path, {"command": "eval", "n_cases": 8, "methods": ["ft-l"]}, resume=True)
    assert list(reopened.done) == [0]
    reopened.record(1, {"ft-l": {}})
    assert [json.loads(line).get("index") for line in path.read_text().splitlines()] == [None, 0, 1]

    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", lines[2]]) + "\n")
    with pytest.raises(ValueError, match="line 2 is damaged"):
        CaseJournal(path, {"command": "eval", "n_cases": 8, "methods": ["ft-l"]}, resume=True)
    restarted = CaseJournal(path, {"command": "eval"}, overwrite=True)
    assert restarted.done == {} and len(path.read_text().splitlines()) == 1


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def worker_pids() -> list[int]:
    """The processes of the workbench's Ray workers on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"ray::WorkbenchWorker" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_two_ray_workers_give_the_single_process_files(tmp_path, ray_session, uninterrupted):
    out = tmp_path / "run"
    assert main([*EVAL, "--out", str(out), "--workers", "2"]) == 0
    assert_same_run(read_run(out), uninterrupted, tolerance=1e-4)  # threads differ: the last bits may too


def test_a_killed_worker_has_its_shard_redone_and_nothing_counted_twice(tmp_path, ray_session, uninterrupted,
                                                                        tiny_model_dir, capsys):
    handle = open_model(tiny_model_dir)
    cases = load_edit_cases(None, handle.world)[:N_CASES]
    killed = []

    def kill_a_worker_once(description, done, total):
        if done >= 1 and not killed:
            killed.append(worker_pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    out = tmp_path / "run"
    compared, journal = run_specs("eval", handle, cases, [MethodSpec("ft-l", "ft-l", None)],
                                  RunOptions(out / JOURNAL_FILE, workers=2), fluency_tokens=40,
                                  progress=kill_a_worker_once)
    assert killed and "a Ray worker was lost" in capsys.readouterr().err
    [(results, records)] = compared.values()
    for record in records:
        record.pop("edit_seconds")
    results.pop("median_edit_seconds")
    results["method"] = "ft-l"
    assert_same_run((results, records), uninterrupted, tolerance=1e-4)
    journal.close()


AVERAGE = ["trace", "average", "--model", "tiny", "--n", "6", "--samples", "2", "--window", "2"]


@pytest.fixture(scope="module")
def whole_average(tmp_path_factory, tiny_model_dir) -> dict:
    whole = tmp_path_factory.mktemp("average") / "whole.json"
    assert main([*AVERAGE, "--out", str(whole)]) == 0
    return json.loads(whole.read_text())


def test_an_interrupted_trace_average_resumes_to_the_same_average(tmp_path, whole_average, capsys, monkeypatch):
    from workbench.app import runs

    average, expected = AVERAGE, whole_average

    stopped = tmp_path / "stopped.json"
    real_run_items = runs.run_items

    def stop_after_three(items, rows_of, progress, description, journal):
        def rows_or_stop(item):
            if len(journal.done) == 3:
                raise KeyboardInterrupt
            return rows_of(item)
        return real_run_items(items, rows_or_stop, progress, description, journal)

    monkeypatch.setattr(runs, "run_items", stop_after_three)
    assert main([*average, "--out", str(stopped)]) == 130
    monkeypatch.undo()
    assert "3 of 6 items are saved" in capsys.readouterr().err and not stopped.exists()
    assert main([*average, "--out", str(stopped), "--resume"]) == 0
    assert json.loads(stopped.read_text()) == expected
    assert not Path(f"{stopped}.progress.jsonl").exists()


@pytest.mark.slow
def test_a_trace_average_sharded_over_two_workers_is_the_same_average(tmp_path, ray_session, whole_average):
    expected, sharded = whole_average, tmp_path / "sharded.json"
    assert main([*AVERAGE, "--out", str(sharded), "--workers", "2"]) == 0
    got = json.loads(sharded.read_text())
    assert got["n_facts"] == expected["n_facts"] == 6
    for kind, grid in expected["effects"].items():
        assert got["effects"][kind] == [[pytest.approx(v, abs=1e-5) if v is not None else None for v in row]
                                        for row in grid]


@pytest.mark.slow
def test_bench_workers_times_one_worker_against_two_on_the_same_cases(ray_session, tiny_model_dir, capsys):
    assert main(["bench", "workers", "--model", "tiny", "--method", "ft-l", "--n", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_cases"] == 4 and result["workers"] == 2
    assert result["workers_1_s"] > result["workers_1_ready_s"] > 0 and result["workers_2_s"] > 0
    assert result["speedup_2_vs_1"] == pytest.approx(result["workers_1_s"] / result["workers_2_s"])
    assert result["max_metric_difference"] < 1e-4  # both sides measured the same edits


@pytest.mark.slow
def test_a_layer_sweep_sharded_over_two_workers_is_the_single_process_sweep(tmp_path, ray_session, tiny_model_dir):
    sweep = ["locate", "--model", "tiny", "--n", "3", "--samples", "2", "--sweep", "--sweep-cases", "3",
             "--layers", "0,1,3", "--method", "ft-l"]
    alone, sharded = tmp_path / "alone.json", tmp_path / "sharded.json"
    assert main([*sweep, "--out", str(alone)]) == 0
    assert main([*sweep, "--out", str(sharded), "--workers", "2"]) == 0
    expected, got = json.loads(alone.read_text())["sweep"], json.loads(sharded.read_text())["sweep"]
    assert got["best_layer"] == expected["best_layer"] and [r["layer"] for r in got["layers"]] == [0, 1, 3]
    for row, expected_row in zip(got["layers"], expected["layers"]):
        for name in ("efficacy", "paraphrase", "neighborhood", "same_subject"):
            assert row[name]["mean"] == pytest.approx(expected_row[name]["mean"], abs=1e-4)
    assert not Path(f"{sharded}.progress.jsonl").exists()


def test_without_ray_the_options_say_how_to_get_it(monkeypatch):
    from workbench.app.workers import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r'pip install -e "\.\[distributed\]"'):
        require_ray()
