"""Shared matplotlib set-up (the non-interactive Agg backend) and figure saving."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from workbench.core.io import give_default_permissions, refuse_existing  # noqa: E402


def figure_paths(path: str | Path) -> list[Path]:
    """The PNG and SVG files ``save_figure`` writes for ``path`` (its suffix is replaced)."""
    path = Path(path)
    return [path.with_suffix(".png"), path.with_suffix(".svg")]


def save_figure(figure, path: str | Path, overwrite: bool = False) -> list[Path]:
    """Save ``figure`` as PNG and SVG next to each other, each through a temporary file and a
    rename; existing files are refused unless ``overwrite``. The figure is closed."""
    written = figure_paths(path)
    try:
        refuse_existing(written, overwrite)
        written[0].parent.mkdir(parents=True, exist_ok=True)
        for target in written:
            handle, staging = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
            os.close(handle)
            try:
                figure.savefig(staging, bbox_inches="tight", dpi=150)
                give_default_permissions(staging)
                os.replace(staging, target)
            except BaseException:
                Path(staging).unlink(missing_ok=True)
                raise
    finally:
        plt.close(figure)
    return written
