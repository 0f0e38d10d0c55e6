"""Start the dashboard: ``streamlit run apps/app.py`` with the model chosen on the command line.

The app (``apps/`` in a checkout) is installed with the package as ``workbench.apps`` and found
with ``importlib.resources``, in an editable checkout and in an installed wheel alike. It serves
127.0.0.1 only, and sends no usage statistics, however it is started: ``apps/.streamlit/config.toml``
says so for a plain ``streamlit run apps/app.py`` too. Another ``address`` must be asked for.
``run_dashboard`` replaces this process with the server, so stopping it stops the server.
"""

from __future__ import annotations

import os
import sys
from importlib.resources import files
from pathlib import Path

MODEL_ENV = "WORKBENCH_DASHBOARD_MODEL"
DEVICE_ENV = "WORKBENCH_DASHBOARD_DEVICE"  # where the server loads models, and in which dtype
DTYPE_ENV = "WORKBENCH_DASHBOARD_DTYPE"


def app_path() -> Path:
    """The Streamlit script of the installed app (``workbench.apps``: ``apps/app.py``)."""
    app = Path(str(files("workbench.apps") / "app.py"))
    if not app.is_file():
        raise FileNotFoundError(f"the dashboard app {app} is missing: reinstall the workbench")
    return app


LOCAL_ADDRESS = "127.0.0.1"


def streamlit_command(port: int, headless: bool = True, address: str = LOCAL_ADDRESS) -> list[str]:
    """The command line that serves the app on ``address:port``."""
    return [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.port", str(port),
            "--server.address", address, "--server.headless", str(headless).lower(),
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]


def dashboard_environment(model: str, device: str = "cpu", dtype: str = "fp32") -> dict[str, str]:
    """This process's environment with the dashboard's starting model, device and dtype set."""
    return {**os.environ, MODEL_ENV: model, DEVICE_ENV: device, DTYPE_ENV: dtype}


def run_dashboard(model: str = "default", port: int = 8501, headless: bool = False,
                  address: str = LOCAL_ADDRESS, device: str = "cpu", dtype: str = "fp32") -> None:
    """Replace this process with the dashboard's server (so that stopping it, by Ctrl-C or a
    signal, stops the server; no child is left listening)."""
    command = streamlit_command(port, headless, address)
    if address != LOCAL_ADDRESS:
        print(f"serving the dashboard on {address}:{port}: anyone who reaches it can load models, edit them and "
              "export edited copies, with no authentication", file=sys.stderr)
    os.execve(command[0], command, dashboard_environment(model, device, dtype))
