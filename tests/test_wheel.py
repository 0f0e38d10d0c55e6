"""The package as a user installs it: a wheel built from the checkout, installed into a fresh
virtual environment outside it, makes the default edit of the demo and starts the dashboard's
command, with the hyperparameter files, the shipped models and the Streamlit app as package data.

The fresh environment takes its dependencies (torch, transformer-lens, ...) from the environment
running the tests, through a path file, so that nothing is downloaded; the workbench itself comes
only from the wheel (the test checks where it is imported from)."""

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                  ".pytest_cache", ".ruff_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source") / "checkout"
    shutil.copytree(ROOT, source, ignore=LEFT_OUT)  # the build writes beside its sources: never in the checkout
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
                   check=True, capture_output=True, text=True)
    [built] = out.glob("knowledge_workbench-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The ``bin`` directory of a fresh environment with the wheel installed."""
    environment = tmp_path_factory.mktemp("venv") / "env"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True, text=True)
    return environment / "bin"


def test_the_wheel_holds_every_package_and_its_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(path.relative_to(ROOT).parent.parts) for path in (ROOT / "workbench").rglob("__init__.py")}
    assert found | {"workbench.apps", "workbench.apps.app_pages"} == set(listed), "pyproject.toml's packages"
    for data in ("workbench/editing/tuned/rome-default.json", "workbench/apps/app.py",
                 "workbench/apps/app_pages/edit.py", "workbench/apps/.streamlit/config.toml"):
        assert data in names
    assert any(name.startswith("workbench/model/shipped/models/tiny-") for name in names)


def run(command: list, tmp_path: Path) -> subprocess.CompletedProcess:
    environment = {"PATH": f"{command[0].parent}:/usr/bin:/bin", "WORKBENCH_CACHE": str(tmp_path / "cache"),
                   "HOME": str(tmp_path)}
    return subprocess.run([str(part) for part in command], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=600)


def test_the_installed_wheel_runs_the_demo_and_the_dashboard_command(installed, tmp_path):
    where = run([installed / "python", "-c", "import workbench, workbench.apps; print(workbench.__file__)"], tmp_path)
    assert where.returncode == 0 and where.stdout.startswith(str(installed.parent)), where.stdout + where.stderr
    demo = run([installed / "workbench", "demo", "--model", "tiny"], tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "4. ROME at layer" in demo.stdout and "The model's weights are unchanged" in demo.stdout
    dashboard = run([installed / "workbench", "dashboard", "--help"], tmp_path)
    assert dashboard.returncode == 0 and "--address" in dashboard.stdout, dashboard.stderr
    app = run([installed / "python", "-c", "from workbench.app.dashboard.launch import app_path; print(app_path())"],
              tmp_path)
    assert app.stdout.strip().startswith(str(installed.parent)) and app.stdout.strip().endswith("apps/app.py")
