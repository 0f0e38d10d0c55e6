"""Predictions before and after an edit, for the edit prompt and the prompts of its case.

``probe_prompts`` lists ``(kind, prompt, expected answer after a perfect edit)``; ``predictions``
measures them in the model's current state (plain, or inside ``edit.applied``);
``format_before_after`` prints two such measurements side by side.
"""

from __future__ import annotations

from workbench.core.cases import EditCase
from workbench.core.edit import EditRequest
from workbench.model.tokens import score_targets, top_next_tokens

PROBE_KINDS = (("paraphrase", "paraphrases"), ("neighbour", "neighbours"), ("reverse", "reverse"),
               ("portability", "portability"))


def probe_prompts(request: EditRequest, case: EditCase | None = None) -> list[tuple[str, str, str]]:
    """The edit prompt and, when the request is a known case, its paraphrase, neighbourhood,
    reverse and portability prompts."""
    probes = [("edit", request.prompt, request.target_new)]
    if case is not None:
        probes += [(kind, probe.prompt, probe.answer) for kind, field in PROBE_KINDS for probe in getattr(case, field)]
    return probes


def predictions(model, probes: list[tuple[str, str, str]], request: EditRequest, k: int = 3,
                context: str = "") -> list[dict]:
    """Per probe: the top ``k`` next tokens, p(expected answer), p(target_new) and p(the edited
    fact's old answer) (None when the request has no ground truth); each prompt is asked after
    ``context`` (an in-context edit's), which the rows do not repeat."""
    rows = []
    for kind, prompt, expected in probes:
        targets = [expected, request.target_new, request.ground_truth or expected]
        asked = context + prompt
        probabilities = score_targets(model, model.tokenizer, [asked] * 3, targets).log_prob.exp().tolist()
        rows.append({"kind": kind, "prompt": prompt, "expected": expected,
                     "top": [(text, round(p, 4)) for text, p in top_next_tokens(model, model.tokenizer, asked, k)],
                     "p_expected": probabilities[0], "p_target_new": probabilities[1],
                     "p_old_answer": probabilities[2] if request.ground_truth else None})
    return rows


def format_before_after(before: list[dict], after: list[dict]) -> str:
    """Each probe's prompt, then its 'before' and 'after' lines."""
    lines = []
    for old, new in zip(before, after):
        lines.append(f"\n[{old['kind']}] {old['prompt']!r} (expected after the edit: {old['expected']!r})")
        for label, row in (("before", old), ("after", new)):
            top = ", ".join(f"{t!r} {p:.2f}" for t, p in row["top"])
            old_answer = f", p(old answer) {row['p_old_answer']:.3f}" if row["p_old_answer"] is not None else ""
            lines.append(f"  {label:>6}: p(expected) {row['p_expected']:.3f}, p(new) {row['p_target_new']:.3f}"
                         f"{old_answer}; top: {top}")
    return "\n".join(lines)
