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
from workbench.evaluation.compare import MethodSpec
from workbench.evaluation.journal import JOURNAL_FILE, CaseJournal
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
    process = subprocess.Popen([sys.executable, "-m", "workbench.app.cli", *EVAL, "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    journal = CaseJournal(out, {"command": "eval", "n_cases": 8, "methods": ["ft-l"]})
    journal.record(0, {"ft-l": {"metrics": {"efficacy": float("nan")}}})
    assert journal.done[0]["ft-l"]["metrics"]["efficacy"] is None  # kept as JSON keeps it
    with pytest.raises(ValueError, match="methods, n_cases differ"):
        CaseJournal(out, {"command": "eval", "n_cases": 9, "methods": ["rome"]}, resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        CaseJournal(out, {"command": "eval"})
    with pytest.raises(FileNotFoundError, match="no interrupted run"):
        CaseJournal(tmp_path / "elsewhere", {}, resume=True)

    path = out / JOURNAL_FILE
    path.write_text(path.read_text() + '{"index": 1, "rows": {"ft-')  # a line cut short by a kill
    reopened = CaseJournal(out, {"command": "eval", "n_cases": 8, "methods": ["ft-l"]}, resume=True)
    assert list(reopened.done) == [0]
    reopened.record(1, {"ft-l": {}})
    assert [json.loads(line).get("index") for line in path.read_text().splitlines()] == [None, 0, 1]

    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", lines[2]]) + "\n")
    with pytest.raises(ValueError, match="line 2 is damaged"):
        CaseJournal(out, {"command": "eval", "n_cases": 8, "methods": ["ft-l"]}, resume=True)
    restarted = CaseJournal(out, {"command": "eval"}, overwrite=True)
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
            if entry.name.isdigit() and b"ray::CaseWorker" in (entry / "cmdline").read_bytes():
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
                                  RunOptions(out, workers=2), fluency_tokens=40, progress=kill_a_worker_once)
    assert killed and "a Ray worker was lost" in capsys.readouterr().err
    [(results, records)] = compared.values()
    for record in records:
        record.pop("edit_seconds")
    results.pop("median_edit_seconds")
    results["method"] = "ft-l"
    assert_same_run((results, records), uninterrupted, tolerance=1e-4)
    journal.close()
