"""Drive the dashboard in a real browser: serve it on localhost, open it in headless Chromium.

Used by the browser test and by ``analyses/dashboard_screenshot.py``. Needs Debian's
``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``) and the
``selenium`` package (the ``dev`` extra); Chromium is started with no network besides localhost.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from workbench.app.dashboard.launch import dashboard_environment, streamlit_command

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1800")


def browser_available() -> bool:
    return CHROMIUM.is_file() and CHROMEDRIVER.is_file()


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@contextmanager
def served_dashboard(model: str, log_file: Path, start_timeout: float = 120.0) -> Iterator[str]:
    """Serve the dashboard (starting with ``model``) for the block; yields its URL. The server's
    output goes to ``log_file``; it is stopped afterwards."""
    port = free_port()
    with open(log_file, "w") as log:
        server = subprocess.Popen(streamlit_command(port), env=dashboard_environment(model), stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_healthy(url, server, start_timeout, log_file)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_until_healthy(url: str, server: subprocess.Popen, timeout: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the dashboard exited with status {server.returncode}; see {log_file}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the dashboard did not answer at {url} within {timeout:.0f} s; see {log_file}")


@contextmanager
def headless_chromium(profile_dir: Path) -> Iterator[object]:
    """A selenium WebDriver for headless Chromium with a fresh profile in ``profile_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def click_button(driver, label: str, timeout: float = 60.0) -> None:
    """Click the Streamlit button showing ``label`` once it is there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    locator = (By.XPATH, f"//button[normalize-space(.)='{label}']")
    WebDriverWait(driver, timeout).until(expected_conditions.element_to_be_clickable(locator)).click()


def wait_for_images(driver, count: int, timeout: float) -> list:
    """The page's rendered images (``st.pyplot`` figures), once at least ``count`` have loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    def loaded(driver):
        images = [image for image in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")
                  if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)]
        return images if len(images) >= count else False

    return WebDriverWait(driver, timeout).until(loaded)
