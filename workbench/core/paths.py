"""Where the workbench keeps what it computes: the user cache."""

from __future__ import annotations

import os
from pathlib import Path

# The package's read-only directory of shipped models, MEND editors and key statistics.
SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "model" / "shipped"


def cache_root() -> Path:
    """``$WORKBENCH_CACHE``, else ``$XDG_CACHE_HOME/knowledge-workbench``, else ``~/.cache/...``."""
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "knowledge-workbench"


def shipped_root() -> Path:
    """``SHIPPED_ROOT``: read only; nothing is ever written there but by ``analyses/ship_models.py``."""
    return SHIPPED_ROOT
