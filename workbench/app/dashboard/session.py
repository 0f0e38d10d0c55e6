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

from workbench.app import api
from workbench.core.edit import Edit, applied_edits
from workbench.core.paths import cache_root
from workbench.editing.editor import Editor
from workbench.editing.export import export_edited_model
from workbench.model.loading import statistics_corpus, training_facts
from workbench.world import World


@dataclass
class SharedModel:
    """A loaded model, where it came from, its fact world (None for models the workbench did not
    train), the lock that serialises its use and the editors made for it (kept, so ROME's key
    statistics and MEND's network are read once)."""

    reference: str
    source: Path | str
    model: object
    world: World | None
    lock: threading.RLock = field(default_factory=threading.RLock)
    _editors: dict = field(default_factory=dict)

    @classmethod
    def load(cls, reference: str) -> SharedModel:
        """Load ``reference`` (a preset name, a local directory or a hub name) as ``api.load_model`` does."""
        model = api.load_model(reference)
        return cls(str(reference), api.source_of(model), model, api.world_of(model))

    @contextmanager
    def use(self, edits: Sequence[Edit] = ()) -> Iterator[object]:
        """The model, alone to the caller and with ``edits`` applied as hooks, for the block."""
        with self.lock, applied_edits(self.model, edits):
            yield self.model

    def editor(self, method: str, hparams=None) -> Editor:
        """The editor of ``method`` with ``hparams`` (a dataclass, or None for the method's file)."""
        with self.lock:
            key = (method, hparams)
            if key not in self._editors:
                corpus = statistics_corpus(None, self.source)
                facts = training_facts(self.world, self.source)
                self._editors[key] = Editor(self.model, method, hparams, facts, corpus)
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
