"""The dashboard's view of what a session's edits do to everything else the model knows: recall of
the world's facts that no active edit made stale, on a fixed random sample of its prompts, and
short sequences of edits compared on the Evaluate page."""

from __future__ import annotations

from collections.abc import Sequence

from workbench.app.dashboard.session import SharedModel
from workbench.core.cases import EditCase
from workbench.core.edit import Edit
from workbench.core.progress import Progress
from workbench.evaluation.sequential import (
    RecallProbes,
    edited_prompts,
    editor_steps,
    sequential_evaluation,
    stale_facts,
    untouched_recall,
)

RECALL_SAMPLE = 400  # prompts: a 95% interval of about +-0.05 around a recall of 0.5, in a second or two


def recall_sample(shared: SharedModel, n: int = RECALL_SAMPLE) -> RecallProbes:
    """``n`` prompts of the model's world drawn with seed 0 (the same every time)."""
    return RecallProbes.of(shared.world).sample(n)


def session_recall(shared: SharedModel, edits: Sequence[Edit], probes: RecallProbes) -> dict:
    """Recall of ``probes``' facts that ``edits`` left untouched, with the weight edits among
    ``edits`` applied (in-context edits change prompts, not the model: they are left out), and the
    number of facts they made stale."""
    weight_edits = [edit for edit in edits if not edit.context]
    stale = stale_facts(shared.world, probes, edited_prompts(weight_edits))
    with shared.use(weight_edits) as model:
        return {**untouched_recall(model, probes, stale), "stale_facts": len(stale)}


def sequence_comparison(shared: SharedModel, methods: Sequence[str], cases: Sequence[EditCase], every: int,
                        base_edits: Sequence[Edit] = (), progress: Progress = False) -> dict[str, list[dict]]:
    """``{method: checkpoints}``: each method edits ``cases`` in sequence on the model with
    ``base_edits`` applied, recall measured on ``recall_sample``'s prompts."""
    runs = {}
    for method in methods:
        steps = editor_steps(shared.editor(method))
        with shared.use(base_edits) as model:
            runs[method] = sequential_evaluation(model, cases, steps, every, world=shared.world, progress=progress,
                                                 description=f"{method}: edits in sequence",
                                                 recall_sample=RECALL_SAMPLE)
    return runs
