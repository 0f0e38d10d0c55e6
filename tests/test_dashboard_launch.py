"""The dashboard serves this machine only, however it is started, and sends no usage statistics."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from workbench.app.dashboard.browser import free_port
from workbench.app.dashboard.launch import app_path, streamlit_command

TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1, as /proc/net writes them


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp* writes them) listening on ``port``."""
    found = set()
    for table in TCP_TABLES:
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not TCP_TABLES[0].is_file(), reason="needs Linux's /proc/net/tcp")
def test_a_plain_streamlit_run_of_the_app_listens_on_loopback_only(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.port", str(port),
               "--server.headless", "true"]  # no address and no statistics flag: the app's own config decides
    with open(tmp_path / "streamlit.log", "w") as log:
        server = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not listening_addresses(port):
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as response:
            assert response.status == 200
        assert listening_addresses(port) and listening_addresses(port) <= LOOPBACK
    finally:
        server.terminate()
        server.wait(timeout=30)
    config = (app_path().parent / ".streamlit" / "config.toml").read_text()
    assert 'address = "127.0.0.1"' in config and "gatherUsageStats = false" in config


def test_the_workbench_command_serves_loopback_unless_told_otherwise():
    command = streamlit_command(8501)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--browser.gatherUsageStats") + 1] == "false"
    wide = streamlit_command(8501, address="0.0.0.0")
    assert wide[wide.index("--server.address") + 1] == "0.0.0.0"
