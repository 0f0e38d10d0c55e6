"""The knowledge-editing workbench: locate and edit factual knowledge in transformer language models.

The public surface (``workbench.api``) is importable from here, loaded on first use so that
``import workbench`` stays cheap: ``load_model``, ``world_of``, ``edit_cases``, ``read_cases``,
``predict``, ``trace``, ``locate``, ``edit``, ``evaluate``, ``export``, ``commit``,
``applied_edits``, ``EditRequest``, ``Edit``.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "load_model": "workbench.api", "world_of": "workbench.api", "edit_cases": "workbench.api",
    "predict": "workbench.api", "trace": "workbench.api", "locate": "workbench.api", "edit": "workbench.api",
    "evaluate": "workbench.api", "export": "workbench.api",
    "read_cases": "workbench.evaluation.cases", "EditRequest": "workbench.editing.edit",
    "Edit": "workbench.editing.edit", "commit": "workbench.editing.edit", "applied_edits": "workbench.editing.edit",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
