"""The model every dashboard session shares, and one session's history of edits.

Streamlit serves each browser session from its own thread while the model (and its hooks) is
shared, so every use of the model goes through ``SharedModel.use``: it holds the model's lock and
applies the edits passed in (a session's active edits) as hooks for the length of the block.
One session therefore never sees another's edits, and the shared weights are never written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.edit import Edit, applied_edits
from workbench.core.paths import cache_root
from workbench.editing.editor import Editor
from workbench.editing.export import export_edited_model
from workbench.model.handle import ModelHandle, open_model
from workbench.world import World


@dataclass
class SharedModel:
    """A model handle, the lock that serialises the model's use and the editors made for it (kept,
    so each is made once; their prepared state, such as ROME's key statistics and MEND's network,
    is the handle's)."""

    handle: ModelHandle
    lock: threading.RLock = field(default_factory=threading.RLock)
    _editors: dict = field(default_factory=dict)

    @classmethod
    def load(cls, reference: str, device: str = "cpu", dtype: str = "fp32") -> SharedModel:
        """Load ``reference`` (a preset name, a local directory or a hub name) on ``device`` in ``dtype``."""
        return cls(open_model(reference, device=device, dtype=dtype))

    @property
    def reference(self) -> str:
        return self.handle.source.reference

    @property
    def source(self) -> Path | str:
        """The model's directory, or its hub name."""
        return self.handle.source.location

    @property
    def model(self):
        return self.handle.bridge

    @property
    def world(self) -> World | None:
        return self.handle.world

    @contextmanager
    def use(self, edits: Sequence[Edit] = ()) -> Iterator[object]:
        """The model, alone to the caller and with ``edits`` applied as hooks, for the block."""
        with self.lock, applied_edits(self.model, edits):
            yield self.model

    def editor(self, method: str, hparams=None) -> Editor:
        """The editor of ``method`` with ``hparams`` (a dataclass or a file; None: the method's
        default for this model)."""
        with self.lock:
            key = (method, hparams)
            if key not in self._editors:
                self._editors[key] = Editor.for_model(self.handle, method, hparams)
            return self._editors[key]


@dataclass
class HistoryEntry:
    edit: Edit
    active: bool = True

    @property
    def label(self) -> str:
        request = self.edit.request
        return f"{self.edit.method}: {request.prompt} → {request.target_new}"


@dataclass
class EditHistory:
    """The edits one session applied, in order; the active ones are applied to everything the
    session runs (later edits are computed on the model with the earlier ones applied)."""

    entries: list[HistoryEntry] = field(default_factory=list)

    def add(self, edit: Edit) -> None:
        self.entries.append(HistoryEntry(edit))

    def active_edits(self) -> list[Edit]:
        return [entry.edit for entry in self.entries if entry.active]

    def set_active(self, index: int, active: bool) -> None:
        self.entries[index].active = active

    def export(self, shared: SharedModel, name: str, root: Path | None = None) -> Path:
        """Write the shared model with the active edits committed into the new directory ``name``
        under ``root`` (default ``export_root()``; refused if it exists, if an active edit is
        in-context, or if the model has no local directory); the shared model is not touched."""
        return export_edited_model(shared.source, self.active_edits(), export_target(name, root or export_root()))


EXPORT_ROOT_ENV = "WORKBENCH_EXPORT_ROOT"


def export_root() -> Path:
    """Where the dashboard writes edited models: ``$WORKBENCH_EXPORT_ROOT``, else the cache's
    ``exports`` directory; nothing it exports goes anywhere else."""
    return Path(os.environ[EXPORT_ROOT_ENV]) if os.environ.get(EXPORT_ROOT_ENV) else cache_root() / "exports"


def export_target(name: str, root: Path) -> Path:
    """``root/name`` for a plain directory name; an empty name, a path or ``..`` is refused."""
    name = name.strip()
    if not name:
        raise ValueError("name the new model directory to write")
    if name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"{name!r}: give a directory name, not a path; exports go under {root}")
    return root / name
