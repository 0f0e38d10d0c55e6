"""Writing result files atomically, never over a file the user did not ask to replace."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def refuse_existing(paths: Iterable[str | Path], overwrite: bool = False) -> None:
    """Raise ``FileExistsError`` naming the first of ``paths`` that exists, a dangling symbolic link
    included (unless ``overwrite``), and ``IsADirectoryError`` for one that is a directory (even with
    ``overwrite``: a file is never written over a directory), so a command that writes several
    files checks them all before it writes any."""
    for path in paths:
        if Path(path).is_dir():
            raise IsADirectoryError(f"{path} is a directory; give the path of a file to write")
        if os.path.lexists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --force to replace it or choose another path")


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def give_default_permissions(path: str | Path) -> None:
    """The mode a plainly created file or directory would get (0666 or 0777 less the umask):
    ``mkstemp`` and ``mkdtemp`` make them private to their owner, wrong for results to share."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def write_text_atomic(path: str | Path, text: str | bytes, overwrite: bool = False) -> Path:
    """Write ``text`` (or bytes) to ``path`` through a temporary sibling and a rename.

    Refuses an existing ``path`` unless ``overwrite`` is true, so no user file is lost by accident.
    """
    path = Path(path)
    refuse_existing([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb" if isinstance(text, bytes) else "w") as stream:
            stream.write(text)
        give_default_permissions(staging)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, payload, overwrite: bool = False) -> Path:
    """``payload`` as indented strict JSON (NaN and infinities become null) through ``write_text_atomic``."""
    return write_text_atomic(path, json.dumps(json_safe(payload), indent=1, allow_nan=False), overwrite=overwrite)


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A fresh temporary sibling of the new directory ``target`` to fill inside the block; renamed
    to ``target`` (with the normal permissions) when the block succeeds, removed when it fails, so
    ``target`` never exists half-written. An existing ``target`` is refused before anything."""
    target = Path(target)
    if os.path.lexists(target):
        raise FileExistsError(f"{target} already exists; this writes a new directory only")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        for path in [staging, *staging.rglob("*")]:  # some writers (safetensors) make their files private
            give_default_permissions(path)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of the file at ``path``; a missing path, a directory or bytes that are not
    UTF-8 are ValueErrors naming ``what`` and the path."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
