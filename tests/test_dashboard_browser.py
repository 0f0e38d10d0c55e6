"""The dashboard in a real browser: served headless on localhost, opened in headless Chromium,
the Trace page runs a trace and shows its heatmaps (a screenshot is saved).

Needs Debian's chromium and chromium-driver; without them the test is skipped, unless
WORKBENCH_BROWSER_TESTS=required (as in CI), where their absence fails it.
"""

import os

import pytest

from workbench.app.dashboard.browser import (
    browser_available,
    click_button,
    headless_chromium,
    served_dashboard,
    wait_for_images,
)

if not browser_available() and os.environ.get("WORKBENCH_BROWSER_TESTS") != "required":
    pytest.skip("Debian chromium and chromium-driver are not installed", allow_module_level=True)


def test_a_trace_run_from_the_browser_shows_its_heatmaps(tiny_model_dir, tmp_path):
    screenshot = tmp_path / "trace-page.png"
    with served_dashboard("tiny", tmp_path / "streamlit.log") as url, headless_chromium(tmp_path / "profile") as driver:
        driver.get(f"{url}/trace")
        click_button(driver, "Run trace", timeout=120)
        [heatmap] = wait_for_images(driver, 1, timeout=180)
        assert driver.execute_script("return arguments[0].naturalWidth", heatmap) > 300
        text = driver.find_element("tag name", "body").text
        assert "The locator picks the MLP output weight of layer" in text
        assert "Traceback" not in text and "Error" not in text
        assert "model: tiny · active edits: 0" in text  # served through the app's navigation, not the page alone
        driver.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
