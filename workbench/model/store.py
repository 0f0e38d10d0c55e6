"""Where trained models live: the user cache, keyed by recipe fingerprint, written atomically.

A cached model directory is trusted only when its manifest (``workbench.json``) names the same
fingerprint and every expected file is present; anything else is rebuilt. Builds happen in a
temporary sibling directory that is renamed into place at the end, under a lock file, so an
interrupted build never leaves a half-written model where a complete one is expected.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from workbench.io import staged_directory
from workbench.model.presets import Recipe, preset
from workbench.model.training import REPORT_FILE, WORLD_FILE, train_model

MANIFEST_FILE = "workbench.json"
EXPECTED_FILES = ("config.json", "model.safetensors", "tokenizer.json", WORLD_FILE, REPORT_FILE,
                  MANIFEST_FILE)


def cache_root() -> Path:
    """``$WORKBENCH_CACHE``, else ``$XDG_CACHE_HOME/knowledge-workbench``, else ``~/.cache/...``."""
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "knowledge-workbench"


def cached_model_dir(recipe: Recipe) -> Path:
    return cache_root() / "models" / f"{recipe.name}-{recipe.fingerprint()}"


def is_complete(model_dir: Path, recipe: Recipe) -> bool:
    """Whether ``model_dir`` holds a finished build of exactly ``recipe``."""
    try:
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("fingerprint") == recipe.fingerprint() and all(
        (model_dir / name).is_file() for name in EXPECTED_FILES)


def build_into(recipe: Recipe, out_dir: Path, progress: bool = True) -> dict:
    """Train ``recipe`` into the new directory ``out_dir`` (built aside, then renamed).

    Refuses an ``out_dir`` that already exists, so no user file is ever overwritten.
    """
    with staged_directory(out_dir) as staging:
        report = train_model(recipe, staging, progress=progress)
        manifest = {"fingerprint": recipe.fingerprint(), "recipe": recipe.to_dict()}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return report


def ensure_model(name: str = "default", progress: bool = True) -> Path:
    """The directory of the preset model ``name``, training it first if the cache lacks it."""
    recipe = preset(name)
    target = cached_model_dir(recipe)
    if is_complete(target, recipe):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(target, recipe):  # built by another process while we waited
            return target
        if target.exists():  # stale or mismatched: never trusted, moved out of the way
            shutil.rmtree(target)
        build_into(recipe, target, progress=progress)
    return target
