"""Where trained models live: the user cache and the shipped models, keyed by fingerprint.

The package ships the default and tiny presets' models (``shipped/``, read only, re-made by
``analyses/ship_models.py``). A preset resolves to, in order: the user cache, the shipped model,
a model trained now (in the precision the machine runs fastest, ``precision.machine_recipe``).
Nothing is ever written into the package directory.

A preset model's fingerprint is its recipe's; a model of an edit-case file's facts adds the file's
SHA-256 and the number of test records, so a changed file is never matched with an old model. A
model directory is trusted only when its manifest (``workbench.json``) names the same fingerprint,
every expected file is present and every file whose SHA-256 the manifest records still has it;
anything else is rebuilt. Builds happen in a temporary sibling directory that is renamed into
place at the end, under a lock file, so an interrupted build never leaves a half-written model
where a complete one is expected.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from workbench.core.cases import read_cases
from workbench.core.io import staged_directory
from workbench.core.paths import cache_root, shipped_root
from workbench.model.precision import machine_description, machine_recipe
from workbench.model.presets import Recipe, preset
from workbench.model.sources import RecordSource, WorldSource, file_digest
from workbench.model.training import REPORT_FILE, train_model

MANIFEST_FILE = "workbench.json"
BASE_FILES = ("config.json", "model.safetensors", "tokenizer.json", REPORT_FILE, MANIFEST_FILE)


def model_dir_name(recipe: Recipe) -> str:
    return f"{recipe.name}-{recipe.fingerprint()}"


def cached_model_dir(recipe: Recipe) -> Path:
    return cache_root() / "models" / model_dir_name(recipe)


def shipped_model_dir(recipe: Recipe) -> Path:
    return shipped_root() / "models" / model_dir_name(recipe)


def file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file in ``directory`` but the manifest, by name."""
    return {path.name: file_digest(path) for path in sorted(directory.iterdir())
            if path.is_file() and path.name != MANIFEST_FILE}


def model_dir_problem(model_dir: Path, fingerprint: str | None,
                      companion_files: tuple[str, ...] = WorldSource.files) -> str | None:
    """What keeps ``model_dir`` from being a finished build with this fingerprint (None: checked
    only against its own manifest), or None when nothing does: its manifest, every expected file,
    and every file the manifest has a SHA-256 for unchanged."""
    try:
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return f"its manifest {MANIFEST_FILE} is missing or unreadable"
    if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
        return f"its manifest names another build ({manifest.get('fingerprint')}, not {fingerprint})"
    missing = [name for name in (*BASE_FILES, *companion_files) if not (model_dir / name).is_file()]
    if missing:
        return f"missing: {', '.join(missing)}"
    changed = [name for name, digest in manifest.get("files", {}).items()
               if not (model_dir / name).is_file() or file_digest(model_dir / name) != digest]
    return f"SHA-256 not the one its manifest records: {', '.join(changed)}" if changed else None


def is_complete(model_dir: Path, fingerprint: str, companion_files: tuple[str, ...] = WorldSource.files) -> bool:
    """Whether ``model_dir`` holds a finished build with this fingerprint (``model_dir_problem``)."""
    return model_dir_problem(model_dir, fingerprint, companion_files) is None


def build_into(recipe: Recipe, out_dir: Path, progress: bool = True, source: RecordSource | None = None,
               fingerprint: str | None = None) -> dict:
    """Train ``recipe`` (on ``source``, default its world) into the new directory ``out_dir``
    (built aside, then renamed), with a manifest naming ``fingerprint`` (default the recipe's).

    Refuses an ``out_dir`` that already exists, so no user file is ever overwritten.
    """
    with staged_directory(out_dir) as staging:
        report = train_model(recipe, staging, progress=progress, source=source)
        manifest = {"fingerprint": fingerprint or recipe.fingerprint(), "recipe": recipe.to_dict(),
                    "precision": "bf16 autocast" if recipe.training.autocast_bf16 else "fp32",
                    "machine": machine_description(recipe.training.device),
                    **({"facts": source.description} if source else {}),
                    "files": file_digests(staging)}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return report


def _ensure(target: Path, fingerprint: str, companion_files: tuple[str, ...], build: Callable[[Path], object]) -> Path:
    """``target`` if it holds a complete build, else ``build(target)`` under a lock file."""
    if is_complete(target, fingerprint, companion_files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another process is building {target}; waiting for it to finish", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(target, fingerprint, companion_files):  # built by another process while we waited
            return target
        if target.exists():  # stale or mismatched: never trusted, moved out of the way
            print(f"corrupt cache at {target} ({model_dir_problem(target, fingerprint, companion_files)}): "
                  "rebuilding", file=sys.stderr)
            shutil.rmtree(target)
        build(target)
    return target


def _announce(decision: str, progress: bool) -> None:
    if decision and progress:
        print(decision, file=sys.stderr)


def ensure_model(name: str = "default", progress: bool = True, device: str = "cpu", precision: str = "auto") -> Path:
    """The directory of the preset model ``name``: cached, else shipped, else trained now on
    ``device`` in ``precision`` (``machine_recipe``; a changed recipe is cached apart and said so)."""
    recipe = preset(name)
    if device == "cpu" and precision == "auto":
        if is_complete(cached_model_dir(recipe), recipe.fingerprint()):
            return cached_model_dir(recipe)
        shipped = shipped_model_dir(recipe)
        problem = model_dir_problem(shipped, recipe.fingerprint())
        if problem is None:
            return shipped
        if shipped.exists():
            print(f"the shipped model at {shipped} is damaged ({problem}): reinstall the package; until then "
                  "the model is trained into the cache", file=sys.stderr)
    trained, decision = machine_recipe(recipe, device, precision)
    _announce(decision, progress)
    return _ensure(cached_model_dir(trained), trained.fingerprint(), WorldSource.files,
                   lambda target: build_into(trained, target, progress=progress))


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
                         progress: bool = True, device: str = "cpu", precision: str = "auto") -> Path:
    """The cached model of ``cases_file``'s true facts (``records_source``) trained with the
    recipe of ``preset_name`` on ``device`` in ``precision`` (``machine_recipe``), trained first
    if missing."""
    recipe, decision = machine_recipe(preset(preset_name), device, precision)
    _announce(decision, progress)
    source = records_source(cases_file, n_test, recipe)
    fingerprint = records_fingerprint(source)
    return _ensure(cache_root() / "models" / f"facts-{preset_name}-{fingerprint}", fingerprint, RecordSource.files,
                   lambda target: build_into(source.recipe, target, progress, source, fingerprint))
