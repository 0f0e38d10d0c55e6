"""Screenshot the dashboard's Edit page after an edit, as README shows it.

    python analyses/dashboard_screenshot.py --out docs/dashboard/edit-page.png [--model default] [--method rome]

Serves the dashboard headless on localhost, opens the Edit page in headless Chromium (Debian's
chromium and chromium-driver), applies the chosen method to the first test-split fact with the
page's default settings, waits for its figures and saves a PNG. An existing file is kept unless
``--force``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from workbench.app.dashboard.browser import click_button, headless_chromium, served_dashboard, wait_for_images
from workbench.core.io import write_text_atomic

PAGE_HEIGHT = 3200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and not args.force:
        parser.error(f"{out} already exists; pass --force to replace it or choose another path")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        with served_dashboard(args.model, scratch / "streamlit.log", start_timeout=300) as url, \
                headless_chromium(scratch / "profile") as driver:
            driver.set_window_size(1400, PAGE_HEIGHT)
            driver.get(f"{url}/edit")
            click_button(driver, "Apply edit", timeout=600)
            wait_for_images(driver, 2, timeout=600)
            image = driver.get_screenshot_as_png()
    write_text_atomic(out, image, overwrite=args.force)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
