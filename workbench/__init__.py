"""The knowledge-editing workbench: locate and edit factual knowledge in transformer language models.

The public surface (``workbench.app.api``) is importable from here, loaded on first use so that
``import workbench`` stays cheap: ``load_model``, ``world_of``, ``edit_cases``, ``read_cases``,
``predict``, ``trace``, ``locate``, ``edit``, ``evaluate``, ``evaluate_sequence``, ``export``, ``commit``,
``applied_edits``, ``EditRequest``, ``Edit``.
"""

from __future__ import annotations

import importlib

_API = ("load_model", "world_of", "edit_cases", "predict", "trace", "locate", "edit", "evaluate", "evaluate_sequence",
        "export")
_PUBLIC = {**dict.fromkeys(_API, "workbench.app.api"), "read_cases": "workbench.core.cases",
           **dict.fromkeys(("EditRequest", "Edit", "commit", "applied_edits"), "workbench.core.edit")}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
