"""Run a bridge as it is without the hooks a caller has applied.

Prepared state that is cached and shared (ROME's key statistics, IKE's embeddings of its
demonstration pool) must describe the model itself, not the model with some session's edits
applied through hooks; ``hooks_suspended(bridge)`` takes every hook off the bridge's hook points
for the block and puts each back, in order, afterwards (also after an error). Hooks added inside
the block are removed by their own handles as usual. A model without hook points (a plain Hugging
Face model) is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def hooks_suspended(model) -> Iterator[None]:
    """No hook of ``model``'s hook points runs within the block (see the module docstring)."""
    points = list(getattr(model, "hook_dict", {}).values())
    saved = [(dict(point._forward_hooks), dict(point._backward_hooks)) for point in points]
    try:
        for point in points:
            point._forward_hooks.clear()
            point._backward_hooks.clear()
        yield
    finally:
        for point, (forward, backward) in zip(points, saved):
            point._forward_hooks.update(forward)
            point._backward_hooks.update(backward)


def active_hook_count(model) -> int:
    """How many forward and backward hooks are on ``model``'s hook points (0 for a plain model)."""
    return sum(len(point._forward_hooks) + len(point._backward_hooks)
               for point in getattr(model, "hook_dict", {}).values())
