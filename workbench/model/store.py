"""Where trained models live: the user cache, keyed by fingerprint, written atomically.

A preset model's fingerprint is its recipe's; a model of an edit-case file's facts adds the
file's SHA-256 and the number of test records, so a changed file is never matched with an old
model. A cached model directory is trusted only when its manifest (``workbench.json``) names the
same fingerprint and every expected file is present; anything else is rebuilt. Builds happen in
a temporary sibling directory that is renamed into place at the end, under a lock file, so an
interrupted build never leaves a half-written model where a complete one is expected.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from workbench.evaluation.cases import read_cases
from workbench.io import staged_directory
from workbench.model.presets import Recipe, preset
from workbench.model.sources import RecordSource, WorldSource
from workbench.model.training import REPORT_FILE, train_model

MANIFEST_FILE = "workbench.json"
BASE_FILES = ("config.json", "model.safetensors", "tokenizer.json", REPORT_FILE, MANIFEST_FILE)


def cache_root() -> Path:
    """``$WORKBENCH_CACHE``, else ``$XDG_CACHE_HOME/knowledge-workbench``, else ``~/.cache/...``."""
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "knowledge-workbench"


def cached_model_dir(recipe: Recipe) -> Path:
    return cache_root() / "models" / f"{recipe.name}-{recipe.fingerprint()}"


def is_complete(model_dir: Path, fingerprint: str, companion_files: tuple[str, ...] = WorldSource.files) -> bool:
    """Whether ``model_dir`` holds a finished build with this fingerprint and every file."""
    try:
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("fingerprint") == fingerprint and all(
        (model_dir / name).is_file() for name in (*BASE_FILES, *companion_files))


def build_into(recipe: Recipe, out_dir: Path, progress: bool = True, source: RecordSource | None = None,
               fingerprint: str | None = None) -> dict:
    """Train ``recipe`` (on ``source``, default its world) into the new directory ``out_dir``
    (built aside, then renamed), with a manifest naming ``fingerprint`` (default the recipe's).

    Refuses an ``out_dir`` that already exists, so no user file is ever overwritten.
    """
    with staged_directory(out_dir) as staging:
        report = train_model(recipe, staging, progress=progress, source=source)
        manifest = {"fingerprint": fingerprint or recipe.fingerprint(), "recipe": recipe.to_dict(),
                    **({"facts": source.description} if source else {})}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return report


def _ensure(target: Path, fingerprint: str, companion_files: tuple[str, ...], build: Callable[[Path], object]) -> Path:
    """``target`` if it holds a complete build, else ``build(target)`` under a lock file."""
    if is_complete(target, fingerprint, companion_files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(target, fingerprint, companion_files):  # built by another process while we waited
            return target
        if target.exists():  # stale or mismatched: never trusted, moved out of the way
            shutil.rmtree(target)
        build(target)
    return target


def ensure_model(name: str = "default", progress: bool = True) -> Path:
    """The directory of the preset model ``name``, training it first if the cache lacks it."""
    recipe = preset(name)
    return _ensure(cached_model_dir(recipe), recipe.fingerprint(), WorldSource.files,
                   lambda target: build_into(recipe, target, progress=progress))


def records_fingerprint(source: RecordSource) -> str:
    """The cache key of a model of ``source``: its recipe, its file's SHA-256 and its split."""
    payload = json.dumps([source.recipe.fingerprint(), source.description["sha256"], source.n_test]).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def records_source(cases_file: str | Path, n_test: int | None = None, recipe: Recipe | None = None) -> RecordSource:
    """The true facts of ``cases_file`` for ``recipe`` (default: the default preset's); ``n_test``
    (default: half the records) are the evaluated ones."""
    cases = read_cases(cases_file)
    return RecordSource(recipe or preset("default"), cases_file, cases, n_test or len(cases) // 2)


def ensure_records_model(cases_file: str | Path, n_test: int | None = None, preset_name: str = "default",
                         progress: bool = True) -> Path:
    """The cached model of ``cases_file``'s true facts (``records_source``) trained with the
    recipe of ``preset_name``, trained first if missing."""
    source = records_source(cases_file, n_test, preset(preset_name))
    fingerprint = records_fingerprint(source)
    return _ensure(cache_root() / "models" / f"facts-{preset_name}-{fingerprint}", fingerprint, RecordSource.files,
                   lambda target: build_into(source.recipe, target, progress, source, fingerprint))
