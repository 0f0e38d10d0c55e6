"""Facts to trace: from an edit-case file (any format ``core.cases`` reads) or a model's world."""

from __future__ import annotations

from pathlib import Path

from workbench.core.cases import EditCase
from workbench.world import World
from workbench.world.cases import load_edit_cases


def facts_from_cases(cases: list[EditCase]) -> list[dict]:
    """``{"prompt", "subject", "answer"}`` per case, the answer being the case's current (true) one."""
    return [{"prompt": c.request.prompt, "subject": c.request.subject, "answer": c.request.ground_truth}
            for c in cases]


def load_facts(cases_file: str | Path | None, world: World | None) -> list[dict]:
    """Facts from ``cases_file``, else from the world's test split."""
    return facts_from_cases(load_edit_cases(cases_file, world))
