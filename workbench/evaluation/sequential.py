"""Sequential editing: edits one after another, each computed on the model as already edited, and
what the accumulation does to the edits before it and to everything else the model knows.

``sequential_evaluation`` makes the edits of ``cases`` in order, ``batch_size`` cases per edit,
each computed with all earlier edits applied through hooks (kept merged: one dense delta per
site, ``core.edit.merged_edit``). Before the first edit and after every ``every`` cases it
records a checkpoint (``edits``: the number of cases edited so far) with, each as an aggregate
(mean, 95% interval, count; ``runner.aggregate``):

- ``latest_efficacy``: the efficacy of each edit since the last checkpoint, measured right after
  that edit was made;
- ``retention``: the efficacy of every edit so far, measured now;
- ``neighborhood_score``: over the neighbourhood prompts of every case edited so far, the share
  whose own answer is still more probable than the case's new target (CounterFact's NS);
- ``recall_corpus`` and ``recall_heldout``: top-1 recall (``model.recall``'s: the answer's first
  token is the top next token) of every fact of the model's world that no edit so far has made
  stale (``world.facts_changed_by``: the edited fact, its two-hop and its reverse facts), in the
  phrasings of the training corpus and in the held-out phrasings; None for a model without a world.

Efficacy compares the new target with the true answer by mean per-token log-probability, as
``metrics`` does. An edit whose computation is no longer finite on the edited model (a
``FloatingPointError``) ends the sequence: the state before it is measured, and the last
checkpoint says why under ``stopped``. ``recall_thresholds`` finds the number of edits at which a
recall first falls below a fraction of its start. The model's weights are never written.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from workbench.core.cases import EditCase
from workbench.core.edit import Edit, merged_edit
from workbench.core.progress import Progress, reported
from workbench.editing.editor import Editor
from workbench.evaluation.runner import aggregate
from workbench.model.tokens import encode_target, first_token_is_top1, score_targets
from workbench.world import World, facts_changed_by, relation

SEQUENTIAL_METRICS = ("latest_efficacy", "retention", "neighborhood_score", "recall_corpus", "recall_heldout")
THRESHOLDS = (0.9, 0.5)

BatchEdit = Callable[[Sequence[EditCase], Sequence[Edit]], Edit]
"""``(cases, earlier) -> Edit``: one edit of ``cases``, computed after the ``earlier`` edits."""


def editor_steps(editor: Editor, layer: int | str | None = None) -> BatchEdit:
    """The steps of a sequence edited by ``editor`` at ``layer``: a single case through
    ``Editor.edit_case`` (so ``layer`` may be ``"auto"``), a batch through ``Editor.edit_batch``."""
    def step(batch: Sequence[EditCase], earlier: Sequence[Edit]) -> Edit:
        if len(batch) == 1:
            return editor.edit_case(batch[0], layer, earlier)
        return editor.edit_batch(batch, layer, earlier)
    return step


@dataclass(frozen=True)
class RecallProbes:
    """Every fact of a world as recall prompts, one per phrasing: the fact's ``(subject,
    relation)``, the prompt, the object and the phrasing set (``"corpus"`` or ``"heldout"``);
    ``by_prompt`` maps each prompt to its fact."""

    facts: tuple[tuple[str, str], ...]
    prompts: tuple[str, ...]
    objects: tuple[str, ...]
    phrasings: tuple[str, ...]
    by_prompt: dict[str, tuple[str, str]]

    @classmethod
    def of(cls, world: World) -> RecallProbes:
        rows = [((fact.subject, fact.relation), template.format(fact.subject), fact.object, which)
                for fact in world.facts for which in ("corpus", "heldout")
                for template in relation(fact.relation).phrasings(which)]
        facts, prompts, objects, phrasings = (tuple(column) for column in zip(*rows))
        return cls(facts, prompts, objects, phrasings, dict(zip(prompts, facts)))

    def sample(self, n: int, seed: int = 0) -> RecallProbes:
        """``n`` of the prompts drawn at random (all of them when there are no more), in order;
        ``by_prompt`` still knows every prompt's fact."""
        if n >= len(self.prompts):
            return self
        chosen = sorted(random.Random(seed).sample(range(len(self.prompts)), n))
        return RecallProbes(*(tuple(column[i] for i in chosen) for column in
                              (self.facts, self.prompts, self.objects, self.phrasings)), self.by_prompt)


def stale_facts(world: World, probes: RecallProbes, prompts: Sequence[str]) -> set[tuple[str, str]]:
    """The facts that edits of these prompts make stale (``world.facts_changed_by``); a prompt
    that phrases no fact of the world makes none stale."""
    stale: set[tuple[str, str]] = set()
    for prompt in prompts:
        fact = probes.by_prompt.get(prompt)
        if fact is not None:
            stale |= facts_changed_by(world, *fact)
    return stale


def edited_prompts(edits: Sequence[Edit]) -> list[str]:
    """The prompt of every request of ``edits`` (a batch edit's ``details["requests"]`` included)."""
    return [request["prompt"] for edit in edits for request in edit.details.get("requests", ())] + [
        edit.request.prompt for edit in edits if "requests" not in edit.details]


def untouched_recall(model, probes: RecallProbes, stale: set[tuple[str, str]]) -> dict[str, dict]:
    """``{"recall_corpus": aggregate, "recall_heldout": aggregate}`` over the facts not in ``stale``."""
    kept = [i for i, fact in enumerate(probes.facts) if fact not in stale]
    hits = first_token_is_top1(model, model.tokenizer, [probes.prompts[i] for i in kept],
                               [probes.objects[i] for i in kept]).tolist()
    return {f"recall_{which}": aggregate([float(hit) for i, hit in zip(kept, hits) if probes.phrasings[i] == which])
            for which in ("corpus", "heldout")}


def per_token(model, prompts: list[str], answers: list[str]) -> list[float]:
    """Each answer's mean per-token log-probability after its prompt."""
    if not prompts:
        return []
    scores = score_targets(model, model.tokenizer, prompts, answers).log_prob.tolist()
    return [score / len(encode_target(model.tokenizer, answer)) for score, answer in zip(scores, answers)]


def efficacies(model, cases: Sequence[EditCase]) -> list[float]:
    """Per case: 1.0 if the new target is more probable than the true answer on the edit prompt."""
    prompts = [case.request.prompt for case in cases]
    new = per_token(model, prompts, [case.request.target_new for case in cases])
    true = per_token(model, prompts, [case.request.ground_truth or "" for case in cases])
    return [float(a > b) for a, b in zip(new, true)]


def neighbourhood_kept(model, cases: Sequence[EditCase]) -> list[float]:
    """Per neighbourhood prompt of ``cases``: 1.0 if its own answer beats its case's new target."""
    pairs = [(probe, case.request.target_new) for case in cases for probe in case.neighbours]
    prompts = [probe.prompt for probe, _ in pairs]
    own = per_token(model, prompts, [probe.answer for probe, _ in pairs])
    new = per_token(model, prompts, [target for _, target in pairs])
    return [float(a > b) for a, b in zip(own, new)]


def default_every(n: int, batch_size: int = 1) -> int:
    """Measure after every tenth of ``n`` edits, in whole batches, and at least after every batch."""
    return max(batch_size, n // 10 // batch_size * batch_size)


def require_world_cases(cases: Sequence[EditCase], batch_size: int, every: int) -> None:
    if not cases:
        raise ValueError("there are no edit cases to edit in sequence")
    if every < 1 or batch_size < 1:
        raise ValueError(f"every ({every}) and the batch size ({batch_size}) must be at least 1")
    if every % batch_size:
        raise ValueError(f"measuring every {every} cases needs whole batches: make it a multiple of the batch "
                         f"size {batch_size}")
    missing = [case.case_id for case in cases if case.request.ground_truth is None]
    if missing:
        raise ValueError(f"sequential evaluation measures efficacy against the true answer; cases {missing[:5]} "
                         "have none")


def sequential_evaluation(model, cases: Sequence[EditCase], edit_batch: BatchEdit, every: int,
                          batch_size: int = 1, world: World | None = None, progress: Progress = True,
                          description: str = "editing in sequence", recall_sample: int | None = None) -> list[dict]:
    """The checkpoints of editing ``cases`` in order (see the module docstring), each a dict with
    ``edits``, ``edit_seconds`` (the time spent computing edits so far), ``untouched_facts`` and
    one aggregate per ``SEQUENTIAL_METRICS`` name. ``recall_sample``: measure recall on that many
    of the world's prompts drawn at random (``RecallProbes.sample``; None: on every prompt)."""
    require_world_cases(cases, batch_size, every)
    probes = RecallProbes.of(world) if world is not None else None
    if probes is not None and recall_sample is not None:
        probes = probes.sample(recall_sample)
    stale: set[tuple[str, str]] = set()
    merged: Edit | None = None
    latest: list[float] = []
    seconds = 0.0
    rows = [checkpoint(model, 0, [], [], probes, stale, seconds)]
    batches = [cases[begin:begin + batch_size] for begin in range(0, len(cases), batch_size)]
    for index, batch in enumerate(reported(batches, description, progress)):
        started = time.perf_counter()
        try:
            edit = edit_batch(batch, [merged] if merged is not None else [])
        except FloatingPointError as error:  # the method's optimisation or solve blew up on the edited model
            if merged is not None and rows[-1]["edits"] != index * batch_size:
                with merged.applied(model):
                    rows.append(checkpoint(model, index * batch_size, cases[:index * batch_size], latest, probes,
                                           stale, seconds))
            rows[-1]["stopped"] = f"edit {index * batch_size + 1} failed: {error}"
            return rows
        seconds += time.perf_counter() - started
        if edit.context:
            raise ValueError(f"{edit.method} edits in context (a prompt prefix): editing in sequence needs "
                             "edits of the weights")
        merged = merged_edit([merged, edit] if merged is not None else [edit])
        if probes is not None:
            stale |= stale_facts(world, probes, [case.request.prompt for case in batch])
        with merged.applied(model):
            latest += efficacies(model, batch)
            done = (index + 1) * batch_size
            if done % every == 0 or index == len(batches) - 1:
                rows.append(checkpoint(model, min(done, len(cases)), cases[:done], latest, probes, stale, seconds))
                latest = []
    return rows


def checkpoint(model, edits: int, edited: Sequence[EditCase], latest: list[float], probes: RecallProbes | None,
               stale: set[tuple[str, str]], seconds: float) -> dict:
    """One checkpoint's row, measured in the model's current state (the edits so far applied)."""
    recall = untouched_recall(model, probes, stale) if probes is not None else {
        "recall_corpus": aggregate([]), "recall_heldout": aggregate([])}
    return {"edits": edits, "edit_seconds": seconds, "latest_efficacy": aggregate(latest),
            "retention": aggregate(efficacies(model, edited)), "neighborhood_score":
            aggregate(neighbourhood_kept(model, edited)), **recall, "untouched_facts": n_untouched(probes, stale)}


def n_untouched(probes: RecallProbes | None, stale: set[tuple[str, str]]) -> int | None:
    """How many facts of ``probes`` are not stale (None without probes)."""
    return len(set(probes.facts) - stale) if probes is not None else None


def recall_thresholds(rows: Sequence[dict], metric: str = "recall_corpus",
                      fractions: Sequence[float] = THRESHOLDS) -> dict[str, int | None]:
    """``{str(fraction): edits}``: the first checkpoint's number of edits at which ``metric`` is
    below ``fraction`` of its value before any edit; None where it never is (or was never measured)."""
    start = rows[0][metric]["mean"]
    found: dict[str, int | None] = {}
    for fraction in fractions:
        below = [row["edits"] for row in rows[1:] if start is not None and row[metric]["mean"] is not None
                 and row[metric]["mean"] < fraction * start]
        found[str(fraction)] = below[0] if below else None
    return found


def sequential_figure(runs: dict[str, Sequence[dict]], title: str = "") -> Figure:
    """One panel per ``SEQUENTIAL_METRICS`` name: each run's mean against the number of edits,
    with its 95% interval shaded."""
    figure, axes = plt.subplots(1, len(SEQUENTIAL_METRICS), figsize=(3.1 * len(SEQUENTIAL_METRICS), 3.0),
                                sharex=True)
    for axis, metric in zip(axes, SEQUENTIAL_METRICS):
        for label, rows in runs.items():
            points = [(row["edits"], row[metric]["mean"], row[metric]["ci95"] or 0.0) for row in rows
                      if row[metric]["mean"] is not None]
            if not points:
                continue
            x, mean, ci = zip(*points)
            line, = axis.plot(x, mean, marker=".", label=label)
            axis.fill_between(x, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)],
                              color=line.get_color(), alpha=0.15, linewidth=0)
        axis.set_title(metric.replace("_", " "), fontsize=9)
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("edits")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure
