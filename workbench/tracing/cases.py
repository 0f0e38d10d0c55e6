"""Facts to trace: from an edit-case file or from a workbench model's own world."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.world import World, export_edit_cases


def facts_from_cases(cases: list[dict], source: str = "cases") -> list[dict]:
    """``{"prompt", "subject", "answer"}`` per case; the answer is ``ground_truth`` (or ``answer``).

    A record without a prompt, a subject or an answer is a clear error naming its index.
    """
    facts = []
    for index, case in enumerate(cases):
        answer = case.get("ground_truth", case.get("answer"))
        required = (("prompt", case.get("prompt")), ("subject", case.get("subject")), ("ground_truth", answer))
        for field, value in required:
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{source}: record {index} has no usable {field!r}")
        facts.append({"prompt": case["prompt"], "subject": case["subject"], "answer": answer})
    return facts


def load_facts(cases_file: str | Path | None, world: World | None) -> list[dict]:
    """Facts from ``cases_file`` (a JSON list of edit cases), else the world's test split."""
    if cases_file is not None:
        path = Path(cases_file)
        if not path.is_file():
            raise ValueError(f"cases file {path} does not exist")
        cases = json.loads(path.read_text())
        if not isinstance(cases, list):
            raise ValueError(f"{path}: expected a JSON list of edit cases")
        return facts_from_cases(cases, str(path))
    if world is None:
        raise ValueError("this model has no fact world: pass --cases FILE")
    return facts_from_cases(export_edit_cases(world, "test"), "the world's test split")
