"""The progress of a long run over many items (edit cases, facts to trace), on disk as it goes,
so that an interrupted run resumes.

A run writes ``progress.jsonl`` into its output directory (``OUT.json.progress.jsonl`` beside an
output file, ``journal_path``): a first line with the run's settings
(``{"settings": {...}}``: what decides its results, such as the method, the hyperparameters, the
model's fingerprint and the items' digest), then one line per finished item
(``{"index": i, "rows": {...}}``), each appended, flushed and synced before the next item starts.
A line cut short by a kill is the item that was being written: it is dropped and that item is
done again. When the run's result files are written the journal is removed.

``--resume`` reopens the journal, refuses it when its settings differ from the command's (naming
the settings that differ), and skips the items it holds; a run without ``--resume`` refuses a
directory that holds a journal, unless ``--force`` (then it starts over). ``run_items`` is the
loop that fills a journal in this process (``app.workers`` fills one from Ray workers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from workbench.core.io import json_safe, write_text_atomic
from workbench.core.progress import Item, Progress, reported

JOURNAL_FILE = "progress.jsonl"


def journal_path(out: str | Path, out_is_file: bool = False) -> Path:
    """The journal of a run that writes into the directory ``out`` (``out/progress.jsonl``), or
    into the file ``out`` (``out.progress.jsonl`` beside it)."""
    out = Path(out)
    return out.with_name(out.name + ".progress.jsonl") if out_is_file else out / JOURNAL_FILE


class RunInterrupted(Exception):
    """A run stopped by Ctrl-C or a termination signal; its journal is whole, the message says
    how to continue."""


class CaseJournal:
    """The journal of a run with ``settings`` (JSON-serialisable) at ``path`` (``journal_path``;
    None: kept in memory only).

    ``resume``: continue the journal there (see the module docstring); ``overwrite``: replace one
    that is there instead of refusing it. ``done`` maps each finished item's index to its rows."""

    def __init__(self, path: str | Path | None, settings: Mapping, resume: bool = False, overwrite: bool = False):
        self.path = Path(path) if path is not None else None
        self.settings = as_json(dict(settings))
        self.done: dict[int, dict] = {}
        if self.path is None:
            return
        if resume:
            self._reopen()
        elif self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} holds an interrupted run; pass --resume to continue it "
                                  "or --force to start over")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_line({"settings": self.settings}, "w")

    def _reopen(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"there is no interrupted run to resume: {self.path} does not exist; "
                                    "run without --resume")
        lines = self.path.read_text(encoding="utf-8").split("\n")
        whole, cut = lines[:-1], lines[-1]  # a last line without its newline was cut short by a kill
        try:
            stored = json.loads(whole[0])["settings"] if whole else None
        except (ValueError, KeyError, TypeError):
            stored = None
        if stored is None:
            raise ValueError(f"{self.path} is not a run journal (its first line holds no settings); "
                             "remove it or pass --force to start over")
        differing = sorted(key for key in stored.keys() | self.settings.keys()
                           if stored.get(key) != self.settings.get(key))
        if differing:
            raise ValueError(f"{self.path} was written by a run with other settings ({', '.join(differing)} "
                             "differ); resume with the same command, or pass --force to start over")
        for number, line in enumerate(whole[1:], start=2):
            try:
                entry = json.loads(line)
                self.done[int(entry["index"])] = entry["rows"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{self.path} line {number} is damaged; pass --force to start over") from None
        if cut:  # rewrite the journal without the cut line, so the next append starts a line of its own
            write_text_atomic(self.path, "".join(line + "\n" for line in whole), overwrite=True)

    def _write_line(self, entry: dict, mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as stream:
            stream.write(json.dumps(entry, allow_nan=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    @classmethod
    def in_memory(cls) -> CaseJournal:
        """A journal that keeps its items in memory only (a run that cannot be resumed)."""
        return cls(None, {})

    def record(self, index: int, rows: dict) -> None:
        """Keep item ``index``'s rows, as JSON keeps them (NaN becomes None), appended to the file;
        an item already recorded is not recorded twice."""
        if index in self.done:
            return
        rows = as_json(rows)
        if self.path is not None:
            self._write_line({"index": index, "rows": rows})
        self.done[index] = rows

    def interrupted_message(self, total: int) -> str:
        """What to tell a user whose run stopped with this journal."""
        if self.path is None:
            return f"interrupted after {len(self.done)} of {total} items (nothing was kept on disk)"
        return (f"interrupted: {len(self.done)} of {total} items are saved in {self.path}; "
                "run the same command with --resume to continue")

    def close(self) -> None:
        """Remove the journal: the run's result files now hold everything it held."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def as_json(value):
    """``value`` as strict JSON gives it back (NaN and infinities become None, tuples lists)."""
    return json.loads(json.dumps(json_safe(value), allow_nan=False))


def run_items(items: Sequence[Item], rows_of: Callable[[Item], dict], progress: Progress = True,
              description: str = "working", journal: CaseJournal | None = None) -> list[dict]:
    """``rows_of(item)`` for every item in order, each kept in ``journal`` as soon as it is made;
    items the journal already holds are not done again. Ctrl-C or a termination signal raises
    ``RunInterrupted`` with the journal whole."""
    journal = journal if journal is not None else CaseJournal.in_memory()
    pending = [index for index in range(len(items)) if index not in journal.done]
    if len(pending) < len(items):
        description += f" ({len(items) - len(pending)} done before)"
    try:
        for index in reported(pending, description, progress):
            journal.record(index, rows_of(items[index]))
    except KeyboardInterrupt:
        raise RunInterrupted(journal.interrupted_message(len(items))) from None
    return [journal.done[index] for index in range(len(items))]
