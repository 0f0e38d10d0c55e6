"""How commands print a result: JSON when asked (``--json``), else a short summary."""

from __future__ import annotations

import json


def print_result(args, result: dict, summary: str) -> int:
    """``result`` as JSON with ``--json``, else ``summary``; the command's exit status (0)."""
    print(json.dumps(result, indent=1) if args.json else summary)
    return 0
