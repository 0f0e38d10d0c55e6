"""Writing result files atomically, never over a file the user did not ask to replace."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename.

    Refuses an existing ``path`` unless ``overwrite`` is true, so no user file is lost by accident.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --force to replace it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, payload, overwrite: bool = False) -> Path:
    """``payload`` as indented JSON through ``write_text_atomic``."""
    return write_text_atomic(path, json.dumps(payload, indent=1), overwrite=overwrite)
