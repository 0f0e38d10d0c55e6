"""A comparison's standard scores split by whether the unedited model knew each case's fact.

    python analyses/scores_by_recall.py --model runs/counterfact-model \\
        --cases ../shared/data/counterfact/counterfact-dev-2k.json runs/cf-compare runs/cf-compare-mend-ike

A case counts as known when the first token of its true answer is the unedited model's top-1 next
token after the edit prompt (the recall of ``workbench model build``'s report). For every method
of every comparison directory given (``workbench compare --out``), prints the scores over all
cases, the known ones and the unknown ones, read from the method's ``cases.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from workbench.core.cases import read_cases
from workbench.evaluation.compare import label_directory
from workbench.evaluation.protocol import format_scores, protocol_scores
from workbench.evaluation.runner import aggregate
from workbench.model.loading import load_model
from workbench.model.tokens import score_targets


def known_case_ids(model, cases) -> set:
    """The ids of the cases whose true answer's first token the model ranks first."""
    hits = score_targets(model, model.tokenizer, [c.request.prompt for c in cases],
                         [c.request.ground_truth for c in cases]).first_token_is_top1
    return {case.case_id for case, hit in zip(cases, hits.tolist()) if hit}


def subset_scores(records: list[dict], source: str) -> dict:
    """The standard scores over ``records`` (per-case records of ``cases.jsonl``)."""
    names = list(records[0]["metrics"])
    values = {name: [math.nan if r["metrics"][name] is None else r["metrics"][name] for r in records]
              for name in names}
    return protocol_scores({name: aggregate(column) for name, column in values.items()}, source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparisons", nargs="+", help="directories written by workbench compare --out")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cases", required=True)
    args = parser.parse_args()
    cases = read_cases(args.cases)
    source = cases[0].source
    known = known_case_ids(load_model(args.model), cases)
    for directory in map(Path, args.comparisons):
        for label in json.loads((directory / "comparison.json").read_text()):
            cases_file = directory / label_directory(label) / "cases.jsonl"
            records = [json.loads(line) for line in cases_file.read_text().splitlines()]
            groups = {"all": records, "known": [r for r in records if r["case_id"] in known],
                      "unknown": [r for r in records if r["case_id"] not in known]}
            for group, rows in groups.items():
                if rows:
                    print(f"{label:>8} {group:>8} ({len(rows):>4} cases)  {format_scores(subset_scores(rows, source))}")


if __name__ == "__main__":
    main()
