"""Streamlit glue shared by the dashboard's pages: the shared model, the session's edits, inputs
used on several pages, progress bars and errors shown in the page.

The model a session uses is named by ``st.session_state["model_reference"]``; it starts as the
``WORKBENCH_DASHBOARD_MODEL`` environment variable (set by ``workbench dashboard --model``), else
``"default"``. Models are loaded on the device and in the dtype of ``workbench dashboard --device
--dtype`` (``WORKBENCH_DASHBOARD_DEVICE``, ``WORKBENCH_DASHBOARD_DTYPE``), once per process
(``st.cache_resource``), and shared by sessions.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from workbench.app.dashboard.launch import DEVICE_ENV, DTYPE_ENV, MODEL_ENV
from workbench.app.dashboard.recall import recall_sample, session_recall
from workbench.app.dashboard.session import EditHistory, SharedModel
from workbench.core.cases import EditCase
from workbench.core.edit import EditRequest
from workbench.core.progress import Progress
from workbench.editing.registry import method_hparams, method_named
from workbench.evaluation.sequential import RecallProbes
from workbench.model.info import model_info
from workbench.model.tokens import top_next_tokens
from workbench.world.cases import load_edit_cases


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_shared(reference: str) -> SharedModel:
    return SharedModel.load(reference, os.environ.get(DEVICE_ENV, "cpu"), os.environ.get(DTYPE_ENV, "fp32"))


@st.cache_resource(show_spinner=False, max_entries=4)
def _world_cases(reference: str, _shared: SharedModel) -> list[EditCase]:
    return load_edit_cases(None, _shared.world)


def world_cases(shared: SharedModel) -> list[EditCase]:
    """The edit cases of the test split of the model's world (read once per model)."""
    return _world_cases(shared.reference, shared)


def model_reference() -> str:
    if "model_reference" not in st.session_state:
        st.session_state["model_reference"] = os.environ.get(MODEL_ENV, "default")
    return st.session_state["model_reference"]


def load_shared(reference: str) -> SharedModel:
    """The shared model for ``reference``, loaded (with a spinner) if no session has yet."""
    with st.spinner(f"loading {reference}"):
        return _load_shared(reference)


def shared_model() -> SharedModel:
    """The session's model; a page stops with the error shown when it cannot be loaded."""
    with shown_errors():
        return load_shared(model_reference())
    st.stop()


def history() -> EditHistory:
    """This session's edits."""
    if "history" not in st.session_state:
        st.session_state["history"] = EditHistory()
    return st.session_state["history"]


@contextmanager
def shown_errors() -> Iterator[None]:
    """Show any error raised in the block as a message in the page (never a traceback); the
    page goes on after the block."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - every failure becomes a message in the page
        st.error(f"{type(error).__name__}: {error}")


def progress_bar() -> Progress:
    """A progress callback (``workbench.core.progress``) drawing a Streamlit progress bar."""
    bar = st.progress(0.0)

    def report(description: str, done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{description}: {done} of {total}")

    return report


@st.cache_resource(show_spinner=False)
def _recall_probes(reference: str, _shared: SharedModel) -> RecallProbes:
    return recall_sample(_shared)


def recall_probes(shared: SharedModel) -> RecallProbes:
    """The model's fixed sample of recall prompts (``dashboard.recall.recall_sample``), made once."""
    return _recall_probes(shared.reference, shared)


@st.cache_data(show_spinner="measuring recall without edits")
def _unedited_recall(reference: str, _shared: SharedModel) -> dict:
    return session_recall(_shared, [], recall_probes(_shared))


def unedited_recall(shared: SharedModel) -> dict:
    """Recall of the sample without any edit (measured once per model)."""
    return _unedited_recall(shared.reference, shared)


def fact_input(shared: SharedModel, key: str) -> tuple[str, str, str, EditCase | None]:
    """``(prompt, subject, current answer, case)``: a test-split case of the model's world, or a
    typed fact (case None; the answer may be empty). Widgets are keyed ``{key}_source``,
    ``{key}_case``, ``{key}_prompt``, ``{key}_subject`` and ``{key}_answer``."""
    sources = ["a fact of the model's world", "a typed fact"] if shared.world else ["a typed fact"]
    if st.radio("fact", sources, key=f"{key}_source", horizontal=True) == "a typed fact":
        prompt = st.text_input("prompt", key=f"{key}_prompt", placeholder="The mother tongue of Danielle Darrieux is")
        subject = st.text_input("subject, as it occurs in the prompt", key=f"{key}_subject",
                                placeholder="Danielle Darrieux")
        answer = st.text_input("current answer (empty: the model's top prediction)", key=f"{key}_answer")
        return prompt, subject, answer, None
    cases = world_cases(shared)
    case = st.selectbox("fact (test split)", cases, key=f"{key}_case",
                        format_func=lambda c: f"{c.request.prompt} … {c.request.ground_truth}")
    return case.request.prompt, case.request.subject, case.request.ground_truth, case


@st.cache_data(show_spinner="measuring the model's recall of its facts", max_entries=4)
def _model_summary(reference: str, _shared: SharedModel) -> dict:
    with _shared.use() as model:
        return model_info(model, _shared.world)


def model_summary(shared: SharedModel) -> dict:
    """Architecture, size and (for a workbench model) fact recall of the unedited model."""
    return _model_summary(shared.reference, shared)


def world_facts(shared: SharedModel, search: str = "") -> list[dict]:
    """The world's facts as table rows; with ``search``, those whose subject, relation or object
    contains it (ignoring case)."""
    needle = search.strip().lower()
    rows = [{"subject": f.subject, "relation": f.relation, "object": f.object,
             "split": shared.world.split_of(f.subject)} for f in shared.world.facts]
    return [row for row in rows if needle in " ".join(row.values()).lower()] if needle else rows


def hparams_input(shared: SharedModel, method: str, key: str):
    """``(hparams, layer)``: the method's default hyperparameters for the shared model with its main
    ones (``EditingMethod.main_hparams``) changed in widgets keyed ``{key}_{field}``, and the layer (``"auto"`` or
    a number; None for methods without one) from the widget ``{key}_layer``."""
    defaults = method_hparams(method, tuned=shared.handle.trained_by_workbench)
    n_layers, layer, main = shared.model.cfg.n_layers, None, method_named(method).main_hparams
    if method_named(method).takes_layer:
        default_layer = defaults.layer if defaults.layer is not None and defaults.layer < n_layers else "auto"
        options = ["auto", *range(n_layers)]
        layer = st.selectbox("layer (auto: the locator's choice)", options, options.index(default_layer),
                             key=f"{key}_layer")
    values = {}
    columns = st.columns(max(len(main), 1))
    for column, name in zip(columns, main):
        default = getattr(defaults, name)
        values[name] = column.number_input(name, value=default, key=f"{key}_{name}",
                                           **({} if isinstance(default, int) else {"format": "%g"}))
    return dataclasses.replace(defaults, **values), layer


def edit_request(model, prompt: str, subject: str, answer: str, target: str) -> EditRequest:
    """The request to edit; an empty ``answer`` becomes the model's top next token."""
    answer = answer.strip() or top_next_tokens(model, model.tokenizer, prompt, 1)[0][0].strip()
    return EditRequest(prompt, subject, target, answer)
