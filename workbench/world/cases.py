"""Edit cases exported from the world, in one JSON schema.

The schema is a superset of EasyEdit's CounterFact records. Every case is a dict with:

- ``case_id`` (int), ``split`` (``train`` | ``test``), ``subject``, ``subject_kind``, ``relation``;
- EasyEdit fields: ``prompt`` (a corpus phrasing ending where the object starts), ``subject``,
  ``ground_truth`` (the world's object), ``target_new`` (another object the relation takes in the
  world), ``rephrase_prompt`` (a held-out phrasing), ``locality_prompt`` and
  ``locality_ground_truth`` (the first neighbourhood prompt and its answer);
- lists of ``{"prompt", "answer", ...}`` dicts, every answer being what a perfect edit yields:
  ``paraphrase_prompts`` (answer ``target_new``; ``held_out`` tells whether the phrasing is absent
  from the corpus), ``neighborhood_prompts`` (other subjects, same relation, their own true
  answer; ``kind`` is ``same_object``, ``same_relation`` or ``shared_name_part``),
  ``same_subject_prompts`` (the subject's other facts, unchanged), ``reverse_prompts`` (the
  inverse relation asked of ``target_new``, answer the subject; empty when the relation has no
  inverse) and ``portability_prompts`` (two-hop facts through the new object; empty when none).

Answers carry no leading space; prompts never end in a space.
"""

from __future__ import annotations

import random
from pathlib import Path

from workbench.core.cases import EditCase, parse_cases, read_cases
from workbench.world.facts import World
from workbench.world.relations import RELATIONS, relation

MAX_NEIGHBOURS = 5
MAX_NAME_PART_NEIGHBOURS = 3
PROMPTS_PER_DERIVED_QUESTION = 3
SPLITS = ("train", "test")


def _entry(template: str, filler: str, answer: str, **extra) -> dict:
    """A prompt (``template`` filled with ``filler``) and its expected answer."""
    return {"prompt": template.format(filler), "answer": answer, **extra}


def _neighbourhood(rng, world: World, subject: str, rel_name: str, target_new: str) -> list[dict]:
    """Other subjects asked the same relation: up to MAX_NEIGHBOURS sharing the true object (filled up
    with others whose answer is neither the truth nor ``target_new``), then up to
    MAX_NAME_PART_NEIGHBOURS people sharing a name part with the subject."""
    rel = relation(rel_name)
    truth = world.object_of(subject, rel_name)
    same_object = [s for s in world.subjects_with(rel_name, truth) if s != subject]
    others = [e.name for e in world.subjects(rel.subject_kind)
              if e.name != subject and world.object_of(e.name, rel_name) not in (None, truth, target_new)]
    rng.shuffle(same_object)
    rng.shuffle(others)
    chosen = [(s, "same_object") for s in same_object[:MAX_NEIGHBOURS]]
    chosen += [(s, "same_relation") for s in others[: MAX_NEIGHBOURS - len(chosen)]]
    parts = set(world.entity(subject).parts)
    sharers = [e.name for e in world.subjects(rel.subject_kind)
               if e.name != subject and parts & set(e.parts)
               and world.object_of(e.name, rel_name) not in (None, target_new)]
    rng.shuffle(sharers)
    already = {s for s, _ in chosen}
    sharers = [s for s in sharers if s not in already]
    chosen += [(s, "shared_name_part") for s in sharers[:MAX_NAME_PART_NEIGHBOURS]]
    return [_entry(rng.choice(rel.corpus), s, world.object_of(s, rel_name), subject=s, kind=kind)
            for s, kind in chosen]


def _same_subject(rng, world: World, subject: str, rel_name: str) -> list[dict]:
    """The subject's other facts, except two-hop facts that pass through the edited relation."""
    entries = []
    for fact in world.facts_about(subject):
        rel = relation(fact.relation)
        if fact.relation == rel_name or (rel.derived_from and rel.derived_from[0] == rel_name):
            continue
        entries.append(_entry(rng.choice(rel.corpus), subject, fact.object, relation=fact.relation))
    return entries


def _phrasing_sample(rng, rel) -> list[tuple[str, bool]]:
    """A few corpus phrasings and one held-out phrasing of ``rel``, flagged ``held_out``."""
    picked = rng.sample(rel.corpus, PROMPTS_PER_DERIVED_QUESTION - 1)
    return [(t, False) for t in picked] + [(rng.choice(rel.heldout), True)]


def _reverse(rng, subject: str, rel_name: str, target_new: str) -> list[dict]:
    inverses = [r for r in RELATIONS if r.inverse_of == rel_name]
    return [_entry(t, target_new, subject, held_out=held_out, relation=inv.name)
            for inv in inverses for t, held_out in _phrasing_sample(rng, inv)]


def _portability(rng, world: World, subject: str, rel_name: str, target_new: str) -> list[dict]:
    entries = []
    for derived in RELATIONS:
        if derived.derived_from is None or derived.derived_from[0] != rel_name:
            continue
        answer = world.object_of(target_new, derived.derived_from[1])
        if answer is None:
            continue
        entries += [_entry(t, subject, answer, held_out=held_out, relation=derived.name)
                    for t, held_out in _phrasing_sample(rng, derived)]
    return entries


def _case(rng: random.Random, world: World, subject: str, rel_name: str) -> dict:
    rel = relation(rel_name)
    truth = world.object_of(subject, rel_name)
    target_new = rng.choice([o for o in world.objects_of_relation(rel_name) if o != truth])
    prompt_template = rng.choice(rel.corpus)
    paraphrases = [_entry(t, subject, target_new, held_out=False)
                   for t in rel.corpus if t != prompt_template]
    paraphrases += [_entry(t, subject, target_new, held_out=True) for t in rel.heldout]
    neighbours = _neighbourhood(rng, world, subject, rel_name, target_new)
    return {
        "split": world.split_of(subject),
        "subject": subject,
        "subject_kind": rel.subject_kind,
        "relation": rel_name,
        "prompt": prompt_template.format(subject),
        "ground_truth": truth,
        "target_new": target_new,
        "rephrase_prompt": rel.heldout[0].format(subject),
        "locality_prompt": neighbours[0]["prompt"] if neighbours else "",
        "locality_ground_truth": neighbours[0]["answer"] if neighbours else "",
        "paraphrase_prompts": paraphrases,
        "neighborhood_prompts": neighbours,
        "same_subject_prompts": _same_subject(rng, world, subject, rel_name),
        "reverse_prompts": _reverse(rng, subject, rel_name, target_new),
        "portability_prompts": _portability(rng, world, subject, rel_name, target_new),
    }


def all_edit_cases(world: World, seed: int = 0) -> list[dict]:
    """One edit case per base fact of every subject, both splits, in a seeded shuffled order."""
    rng = random.Random(seed)
    cases = [_case(rng, world, f.subject, f.relation)
             for f in world.facts if relation(f.relation).is_base]
    rng.shuffle(cases)
    return cases


def export_edit_cases(world: World, split: str | None = None, seed: int = 0) -> list[dict]:
    """The edit cases of ``split`` (``None`` for both), numbered by ``case_id`` in order."""
    if split not in (None, *SPLITS):
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    cases = [c for c in all_edit_cases(world, seed) if split is None or c["split"] == split]
    return [{"case_id": i, **case} for i, case in enumerate(cases)]


def edit_triples(world: World, seed: int = 0) -> set[tuple[str, str, str]]:
    """``(subject, relation, target_new)`` of every exported case: never stated in the corpus."""
    return {(c["subject"], c["relation"], c["target_new"]) for c in all_edit_cases(world, seed)}


def facts_changed_by(world: World, subject: str, relation_name: str) -> set[tuple[str, str]]:
    """``(subject, relation)`` of every fact of ``world`` an edit of ``(subject, relation_name)``
    makes stale: the fact itself, the subject's two-hop facts whose first hop it is, the two-hop
    facts of other subjects whose second hop it is, and the reverse facts that point at the subject."""
    changed = {(subject, relation_name)}
    for rel in RELATIONS:
        if rel.derived_from is not None and rel.derived_from[0] == relation_name:
            changed.add((subject, rel.name))
        if rel.derived_from is not None and rel.derived_from[1] == relation_name:
            changed |= {(other, rel.name) for other in world.subjects_with(rel.derived_from[0], subject)}
        if rel.inverse_of == relation_name:
            changed |= {(other, rel.name) for other in world.subjects_with(rel.name, subject)}
    return changed


def load_edit_cases(cases_file: str | Path | None, world: World | None) -> list[EditCase]:
    """The cases of ``cases_file`` (any format above), else the test split of the model's world."""
    if cases_file is not None:
        cases = read_cases(cases_file)
        if not cases:
            raise ValueError(f"{cases_file} has no edit case to use (it holds none, or every record was left out)")
        return cases
    if world is None:
        raise ValueError("this model has no fact world: pass --cases FILE")
    return parse_cases(export_edit_cases(world, "test"), "the world's test split")
