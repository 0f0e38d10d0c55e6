"""Edit cases read from the formats of the field, into one typed form.

Formats, detected per record from its fields:

- ``workbench``: the world export (``workbench world export``), recognised by ``paraphrase_prompts``
  holding dicts;
- ``easyedit``: EasyEdit's CounterFact records (``prompt``, ``subject``, ``ground_truth``,
  ``target_new``, ``rephrase_prompt``, ``locality_prompt``, ``locality_ground_truth``);
- ``rome``: ROME's CounterFact records (``requested_rewrite`` with a ``{}`` prompt,
  ``paraphrase_prompts`` and ``neighborhood_prompts`` as strings);
- ``zsre``: MEND's zsRE records (``src``, ``rephrase``, ``alt``, ``answers``, ``loc``,
  ``loc_ans``, ``subject``).

A malformed record is a ``ValueError`` naming its index and the field at fault.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from workbench.core.edit import EditRequest
from workbench.core.io import read_text_file


@dataclass(frozen=True)
class Probe:
    """A prompt and the answer a perfect edit gives to it."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class EditCase:
    case_id: int | str
    request: EditRequest
    paraphrases: tuple[Probe, ...]
    neighbours: tuple[Probe, ...]
    same_subject: tuple[Probe, ...] = ()
    reverse: tuple[Probe, ...] = ()
    portability: tuple[Probe, ...] = ()
    source: str = ""

    def prompts_and_answers(self) -> list[tuple[str, list[str]]]:
        """Every prompt the evaluation asks of this case with the answers it scores after it: the
        edit prompt with the new target and the true answer, each probe with its own."""
        groups = (self.paraphrases, self.neighbours, self.same_subject, self.reverse, self.portability)
        return [(self.request.prompt, [self.request.target_new, self.request.ground_truth or ""]),
                *((probe.prompt, [probe.answer]) for group in groups for probe in group)]

    def asked(self) -> tuple[list[str], list[str]]:
        """``(prompts, answers)``: every prompt the evaluation asks of this case and every answer it
        scores after one (``prompts_and_answers``, flattened)."""
        pairs = self.prompts_and_answers()
        return [prompt for prompt, _ in pairs], [answer for _, answers in pairs for answer in answers]

    def in_context(self, context: str) -> EditCase:
        """This case with ``context`` before every prompt (an in-context edit's view of it)."""
        if not context:
            return self

        def probes(group: tuple[Probe, ...]) -> tuple[Probe, ...]:
            return tuple(Probe(context + probe.prompt, probe.answer) for probe in group)

        return replace(self, request=replace(self.request, prompt=context + self.request.prompt),
                       paraphrases=probes(self.paraphrases), neighbours=probes(self.neighbours),
                       same_subject=probes(self.same_subject), reverse=probes(self.reverse),
                       portability=probes(self.portability))


class NothingToEdit(ValueError):
    """A record whose new target is empty or equal to its answer."""


class _Record:
    """Field access that names the record and the field when something is missing or malformed."""

    def __init__(self, data, index: int, source: str):
        if not isinstance(data, dict):
            raise ValueError(f"{source}: record {index} is not an object")
        self.data, self.index, self.source = data, index, source

    def error(self, field: str, problem: str) -> ValueError:
        return ValueError(f"{self.source}: record {self.index}, field {field!r}: {problem}")

    def text(self, field: str, container: dict | None = None) -> str:
        value = (self.data if container is None else container).get(field)
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, "missing or not a non-empty string")
        return value.strip()

    def target(self, field: str, container: dict | None = None) -> str:
        """A new target: a string, possibly blank (``request`` then reports nothing to edit)."""
        value = (self.data if container is None else container).get(field)
        if not isinstance(value, str):
            raise self.error(field, "missing or not a string")
        return value.strip()

    def probes(self, field: str, answer_field: str = "answer") -> tuple[Probe, ...]:
        entries = self.data.get(field, [])
        if not isinstance(entries, list):
            raise self.error(field, "not a list")
        probes = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise self.error(field, "entries must be objects with a prompt and an answer")
            probes.append(Probe(self.text("prompt", entry), self.text(answer_field, entry)))
        return tuple(probes)

    def request(self, prompt: str, subject: str, target_new: str, ground_truth: str) -> EditRequest:
        if not target_new or target_new == ground_truth.strip():
            raise NothingToEdit(f"{self.source}: record {self.index}: the new target is empty or the answer")
        try:
            return EditRequest(prompt, subject, target_new, ground_truth)
        except ValueError as error:
            raise ValueError(f"{self.source}: record {self.index}: {error}") from None


def _workbench(r: _Record) -> EditCase:
    request = r.request(r.text("prompt"), r.text("subject"), r.target("target_new"), r.text("ground_truth"))
    return EditCase(r.data.get("case_id", r.index), request, r.probes("paraphrase_prompts"),
                    r.probes("neighborhood_prompts"), r.probes("same_subject_prompts"),
                    r.probes("reverse_prompts"), r.probes("portability_prompts"), "workbench")


def _easyedit(r: _Record) -> EditCase:
    target = r.target("target_new")
    request = r.request(r.text("prompt"), r.text("subject"), target, r.text("ground_truth"))
    return EditCase(r.data.get("case_id", r.index), request, (Probe(r.text("rephrase_prompt"), target),),
                    (Probe(r.text("locality_prompt"), r.text("locality_ground_truth")),), source="easyedit")


def _rome(r: _Record) -> EditCase:
    rewrite = r.data["requested_rewrite"]
    if not isinstance(rewrite, dict):
        raise r.error("requested_rewrite", "not an object")
    subject = r.text("subject", rewrite)
    template = r.text("prompt", rewrite)
    rest = template.replace("{}", "", 1)
    if "{}" not in template or "{" in rest or "}" in rest:
        raise r.error("requested_rewrite.prompt", f"must hold one {{}} for the subject and no other brace: "
                      f"{template!r}")
    target, truth = (r.text("str", rewrite.get(k) if isinstance(rewrite.get(k), dict) else {})
                     for k in ("target_new", "target_true"))
    strings = {}
    for field in ("paraphrase_prompts", "neighborhood_prompts"):
        values = r.data.get(field, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise r.error(field, "not a list of strings")
        strings[field] = values
    return EditCase(r.data.get("case_id", r.index), r.request(template.replace("{}", subject), subject, target, truth),
                    tuple(Probe(p, target) for p in strings["paraphrase_prompts"]),
                    tuple(Probe(p, truth) for p in strings["neighborhood_prompts"]), source="rome")


def _zsre(r: _Record) -> EditCase:
    answers = r.data.get("answers")
    if not isinstance(answers, list) or not answers or not isinstance(answers[0], str):
        raise r.error("answers", "not a non-empty list of strings")
    target = r.target("alt")
    request = r.request(r.text("src"), r.text("subject"), target, answers[0].strip())
    return EditCase(r.data.get("case_id", r.index), request, (Probe(r.text("rephrase"), target),),
                    (Probe(r.text("loc"), r.text("loc_ans")),), source="zsre")


def record_format(data: dict) -> str:
    """The format a record is in, from its fields (see the module docstring)."""
    if "requested_rewrite" in data:
        return "rome"
    if "src" in data and "alt" in data:
        return "zsre"
    if isinstance(data.get("paraphrase_prompts"), list) and "target_new" in data:
        return "workbench"
    if "rephrase_prompt" in data:
        return "easyedit"
    raise ValueError("unrecognised edit-case record; expected the workbench, EasyEdit, ROME or zsRE fields")


READERS = {"workbench": _workbench, "easyedit": _easyedit, "rome": _rome, "zsre": _zsre}


def parse_cases(records: list, source: str = "cases") -> list[EditCase]:
    """Edit cases from decoded JSON records. Records whose new target is empty or equal to their
    answer (19 of the 1,000 zsRE dev records) are left out with a warning that counts them; any
    other problem is an error naming the record and the field."""
    if not isinstance(records, list):
        raise ValueError(f"{source}: expected a JSON list of edit cases")
    cases, unchanged = [], []
    for index, data in enumerate(records):
        record = _Record(data, index, source)
        try:
            kind = record_format(data)
        except ValueError as error:
            raise ValueError(f"{source}: record {index}: {error}") from None
        try:
            cases.append(READERS[kind](record))
        except NothingToEdit:
            unchanged.append(index)
    if unchanged:
        warnings.warn(f"{source}: left out {len(unchanged)} records whose new target is empty or their answer "
                      f"(records {unchanged[:10]}{'...' if len(unchanged) > 10 else ''})", stacklevel=2)
    return cases


def read_cases(path: str | Path) -> list[EditCase]:
    """Every edit case in the JSON file at ``path``."""
    path = Path(path)
    text = read_text_file(path, "cases file")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    return parse_cases(records, str(path))
