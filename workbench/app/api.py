"""The short public surface for scripts and notebooks; everything is importable from ``workbench``.

    import workbench as wb
    model = wb.load_model("default")
    case = wb.edit_cases(model)[0]
    trace = wb.trace(model, case.request.prompt, case.request.subject)
    edit = wb.edit(model, case.request, layer=wb.locate(model, trace).site.layer)
    with edit.applied(model):                 # any run_with_hooks / run_with_cache experiment
        print(wb.predict(model, case.request.prompt))
    print(wb.evaluate(model, method="rome", n=20)["efficacy"])
    curve = wb.evaluate_sequence(model, method="alphaedit", n=50, every=10)   # edits one after another

``load_model`` remembers where each model came from, so the functions below find its fact world
(for key statistics and edit cases) and its directory (for ``export``) without being told.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path

import torch

from workbench.core.cases import EditCase, parse_cases
from workbench.core.edit import Edit, EditRequest
from workbench.editing.editor import Editor
from workbench.editing.export import export_edited_model
from workbench.evaluation.runner import evaluate as run_evaluation
from workbench.evaluation.sequential import default_every, editor_steps, sequential_evaluation
from workbench.model.handle import ModelHandle, open_model
from workbench.model.tokens import top_next_tokens
from workbench.tracing.locator import Location, locate_from_trace
from workbench.tracing.trace import TraceConfig, TraceResult, trace_fact
from workbench.world import World, export_edit_cases

_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def load_model(reference: str | Path | None = None, device: str = "cpu", dtype: str | torch.dtype = "fp32"):
    """``"default"`` or ``"tiny"`` (shipped with the package), a local Hugging Face directory or
    a hub name, as a TransformerBridge (see ``workbench.model.loading``) on ``device`` (``"cpu"``,
    ``"cuda"``, ``"cuda:N"``) with its weights in ``dtype`` (``"fp32"``, ``"bf16"``, ``"fp16"``)."""
    handle = open_model(reference, device=device, dtype=dtype)
    _SOURCES[handle.bridge] = handle.source
    return handle.bridge


def handle_of(model) -> ModelHandle:
    """The handle of a bridge ``load_model`` returned (its source, facts and prepared state)."""
    if model not in _SOURCES:
        raise ValueError("this model was not loaded with workbench.load_model, so its source is unknown")
    return ModelHandle(model, _SOURCES[model])


def world_of(model) -> World | None:
    """The fact world of a workbench-trained model, or None for other models."""
    return handle_of(model).world


def edit_cases(model, split: str | None = "test") -> list[EditCase]:
    """The edit cases of the model's world: its ``"test"`` or ``"train"`` split, or None for all
    (for a file of cases in any supported format, use ``read_cases``)."""
    world = world_of(model)
    if world is None:
        raise ValueError("this model has no fact world: read edit cases with workbench.read_cases(FILE)")
    return parse_cases(export_edit_cases(world, split), f"the world's {split or 'full'} export")


def predict(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``prompt`` with their probabilities."""
    return top_next_tokens(model, model.tokenizer, prompt, k)


def trace(model, prompt: str, subject: str, answer: str | None = None, seed: int = 0, **options) -> TraceResult:
    """Causal tracing of one fact (``options`` are ``TraceConfig`` fields: samples, window, kinds...)."""
    return trace_fact(model, prompt, subject, answer, TraceConfig(**options), torch.Generator().manual_seed(seed))


def locate(model, traced: TraceResult) -> Location:
    """The MLP output weight to edit, chosen from a trace (``.site.layer``; ``.warning`` if weak)."""
    return locate_from_trace(model, traced)


def edit(model, request: EditRequest, method: str = "rome", layer: int | str | None = None,
         hparams=None, stats_corpus: str | Path | None = None) -> Edit:
    """Compute an edit (nothing is written to the model); apply it with ``with edit.applied(model):``
    or commit it with ``workbench.commit``. ``layer``: a number, ``"auto"``, or None for the
    hyperparameter file's."""
    return Editor.for_model(handle_of(model), method, hparams, stats_corpus=stats_corpus)(request, layer)


def evaluate(model, cases: Sequence[EditCase] | None = None, method: str = "rome", layer: int | str | None = None,
             n: int | None = None, hparams=None, progress: bool = True) -> dict:
    """Edit each case with ``method`` through hooks and measure it before and after; the
    aggregate metrics (mean, ci95, n) and, under ``"cases"``, every case's record."""
    if n is not None and n < 1:
        raise ValueError(f"n is how many cases to evaluate: at least 1, got {n}")
    cases = list(cases if cases is not None else edit_cases(model))[:n]
    editor = Editor.for_model(handle_of(model), method, hparams)
    results, records = run_evaluation(model, cases, lambda case: editor.edit_case(case, layer), progress=progress)
    return {**results, "method": method, "cases": records}


def evaluate_sequence(model, cases: Sequence[EditCase] | None = None, method: str = "rome", n: int = 100,
                      every: int | None = None, batch_size: int = 1, layer: int | None = None, hparams=None,
                      progress: bool = True) -> list[dict]:
    """Edit ``n`` cases (default: the world's test split) one after another, ``batch_size`` per
    edit, each computed on the model as already edited, and measure every ``every`` cases (default
    ``n // 10``): the checkpoints of ``workbench.evaluation.sequential`` (latest efficacy,
    retention, neighbourhood and recall of the world's untouched facts). The model's weights are
    never written."""
    cases = list(cases if cases is not None else edit_cases(model))[:n]
    editor = Editor.for_model(handle_of(model), method, hparams)
    every = every or default_every(len(cases), batch_size)
    return sequential_evaluation(model, cases, editor_steps(editor, layer), every, batch_size, world_of(model),
                                 progress)


def export(model, edits: Sequence[Edit], out_dir: str | Path, allow_other_base: bool = False) -> Path:
    """Write ``model`` with ``edits`` committed to a new Hugging Face directory (the model in memory
    and its own directory are not touched). The edits must have been computed on the weights of the
    model's directory, unless ``allow_other_base``."""
    return export_edited_model(handle_of(model).source.location, edits, out_dir, allow_other_base)
