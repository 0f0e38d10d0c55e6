"""Start the dashboard: ``streamlit run apps/app.py`` with the model chosen on the command line.

The app lives beside the package in a checkout (``pip install -e .``), not inside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MODEL_ENV = "WORKBENCH_DASHBOARD_MODEL"
APP = Path(__file__).resolve().parents[2] / "apps" / "app.py"


def app_path() -> Path:
    if not APP.is_file():
        raise FileNotFoundError(f"the dashboard app {APP} is missing: the dashboard runs from a checkout of the "
                                "workbench installed with `pip install -e .`")
    return APP


def streamlit_command(port: int, headless: bool = True) -> list[str]:
    """The command line that serves the app on ``localhost:port``."""
    return [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.port", str(port),
            "--server.address", "localhost", "--server.headless", str(headless).lower(),
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]


def dashboard_environment(model: str) -> dict[str, str]:
    """This process's environment with the dashboard's starting model set."""
    return {**os.environ, MODEL_ENV: model}


def run_dashboard(model: str = "default", port: int = 8501, headless: bool = False) -> int:
    """Serve the dashboard until interrupted; its exit status."""
    return subprocess.call(streamlit_command(port, headless), env=dashboard_environment(model))
