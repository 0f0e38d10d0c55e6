"""Progress of a loop over items, for a terminal or for a caller such as the dashboard.

``progress`` is ``True`` (a tqdm bar), ``False`` (nothing) or a callable
``progress(description, done, total)``, called once before the first item and after each one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")
Progress = bool | Callable[[str, int, int], None]


def reported(items: Sequence[Item], description: str, progress: Progress) -> Iterator[Item]:
    """Yield ``items`` in order, reporting progress as ``progress`` asks."""
    if not callable(progress):
        yield from tqdm(items, desc=description, disable=not progress)
        return
    progress(description, 0, len(items))
    for done, item in enumerate(items, start=1):
        yield item
        progress(description, done, len(items))
