"""Every dashboard page through Streamlit's AppTest (widgets driven by key, outputs asserted, no
exception), bad input shown as messages, and two sessions run at once on the shared model."""

import re
import threading

import pytest
from streamlit.testing.v1 import AppTest

from workbench.app.dashboard.launch import app_path
from workbench.app.dashboard.session import SharedModel
from workbench.world.cases import load_edit_cases

TIMEOUT = 600


def open_page(page: str | None = None) -> AppTest:
    """A new session on the tiny model, on ``page`` (the Model page when None). The app's main
    script runs first; after ``switch_page`` AppTest runs the page's script alone."""
    at = AppTest.from_file(str(app_path()), default_timeout=TIMEOUT)
    at.session_state["model_reference"] = "tiny"
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    assert_clean(at)
    return at


def edit_page(case, method: str) -> AppTest:
    """A new session on the Edit page with ``case`` and ``method`` chosen."""
    at = open_page("edit")
    at.selectbox(key="edit_case").set_value(case)
    at.selectbox(key="edit_method").set_value(method).run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def errors(at: AppTest) -> str:
    assert not at.exception, [e.value for e in at.exception]
    return " ".join(e.value for e in at.error)


@pytest.fixture(scope="module")
def cases(tiny_world):
    return load_edit_cases(None, tiny_world)


def test_model_page_shows_the_model_and_searches_its_facts(tiny_world):
    at = open_page()
    assert at.sidebar.caption[0].value == "model: tiny · active edits: 0"  # the app's main script ran
    summary = at.table[0].value
    assert summary["layers"].tolist() == ["4"]
    assert 0.9 < float(summary["recall_corpus"].iloc[0]) <= 1.0  # the tiny model's training report: 0.965
    subject = tiny_world.facts[0].subject
    at.text_input(key="facts_search").input(subject.lower()).run()
    rows = at.dataframe[0].value
    assert set(rows[rows["subject"] == subject]["relation"]) == {f.relation for f in tiny_world.facts_about(subject)}
    assert all(subject.lower() in " ".join(row).lower() for row in rows.itertuples(index=False))
    assert len(rows) < len(tiny_world.facts)
    assert_clean(at)


@pytest.mark.parametrize("kind, reference, message", [
    ("a local Hugging Face directory", "/no/such/model", "does not exist"),
    ("a hub name", "no-such-org-x/no-such-model-x", "hub"),
])
def test_a_model_that_cannot_be_loaded_is_a_message_and_the_session_keeps_its_model(kind, reference, message,
                                                                                      monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no network wait: fail at once
    at = open_page()
    at.radio(key="model_kind").set_value(kind).run()
    at.text_input(key="model_path").input(reference).run()
    at.button(key="model_load").click().run()
    assert message in errors(at)
    assert at.session_state["model_reference"] == "tiny"


def test_trace_page_traces_a_world_fact_and_outlines_the_locators_layer(cases):
    at = open_page("trace")
    at.selectbox(key="trace_case").set_value(cases[1])
    at.number_input(key="trace_samples").set_value(3)
    at.button(key="trace_run").click().run()
    assert_clean(at)
    assert len(at.image) == 1
    assert "The locator picks the MLP output weight of" in " ".join(m.value for m in at.markdown)
    at.number_input(key="average_n").set_value(3)
    at.button(key="average_run").click().run()
    assert_clean(at)
    assert len(at.image) == 2
    assert "Over 3 facts the locator picks" in " ".join(m.value for m in at.markdown)


def test_trace_page_shows_a_typed_subject_missing_from_its_prompt_as_a_message():
    at = open_page("trace")
    at.radio(key="trace_source").set_value("a typed fact").run()
    at.text_input(key="trace_prompt").input("The capital of Narnia is")
    at.text_input(key="trace_subject").input("Gondor")
    at.button(key="trace_run").click().run()
    assert "does not occur in prompt" in errors(at)
    assert not at.image


def test_edit_page_applies_rome_and_compares_before_and_after(cases):
    at = edit_page(cases[0], "rome")
    at.selectbox(key="edit_layer").set_value(0)
    at.button(key="edit_apply").click().run()
    assert_clean(at)
    assert "ROME edit of layer 0" in at.success[0].value
    predictions = at.dataframe[0].value
    assert predictions["kind"].tolist()[0] == "edit"
    assert predictions["p(expected) after"].iloc[0] > 0.5 > predictions["p(expected) before"].iloc[0]
    metrics = at.table[0].value
    assert metrics["efficacy"].iloc[0] == "1.000"
    assert len(at.image) == 2  # the activation change, and the key and value at layer 0
    assert "rank 1" in " ".join(m.value for m in at.markdown)
    at.button(key="edit_trace").click().run()
    assert_clean(at)
    assert len(at.image) == 4
    assert len(at.session_state["history"].entries) == 1


def test_edit_page_ike_edits_in_context_and_mend_without_an_editor_names_the_fix(cases):
    at = edit_page(cases[0], "ike")
    at.number_input(key="edit_k").set_value(2)
    at.button(key="edit_apply").click().run()
    assert_clean(at)
    assert "IKE edit of the prompt's context" in at.success[0].value
    assert "no edit site" in at.info[0].value
    at.selectbox(key="edit_method").set_value("mend").run()
    at.button(key="edit_apply").click().run()
    assert "workbench mend train" in errors(at)
    assert len(at.session_state["history"].entries) == 1  # the failed edit was not recorded


def test_evaluate_page_compares_methods_and_offers_downloads():
    at = open_page("evaluate")
    at.multiselect(key="evaluate_methods").set_value(["ft-l"])
    at.number_input(key="evaluate_n").set_value(2)
    at.button(key="evaluate_run").click().run()
    assert_clean(at)
    assert "| ft-l |" in " ".join(m.value for m in at.markdown)
    assert len(at.image) == 1
    assert at.session_state["evaluate_table"]["ft-l"]["n_cases"] == 2
    assert {button.label for button in at.get("download_button")} == {"comparison.json", "comparison.csv"}


def test_evaluate_page_compares_short_sequences_of_edits():
    at = open_page("evaluate")
    at.multiselect(key="sequence_methods").set_value(["rome", "alphaedit"])
    at.number_input(key="sequence_n").set_value(4)
    at.number_input(key="sequence_every").set_value(2)
    at.button(key="sequence_run").click().run()
    assert_clean(at)
    runs = at.session_state["sequence_runs"]
    assert list(runs) == ["rome", "alphaedit"] and [row["edits"] for row in runs["rome"]] == [0, 2, 4]
    assert runs["rome"][0]["recall_corpus"]["n"] > 0 and len(at.image) == 1
    assert "| alphaedit | 4 |" in " ".join(m.value for m in at.markdown)


def test_history_page_turns_edits_off_and_exports_the_active_ones(cases, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_EXPORT_ROOT", str(tmp_path))
    at = edit_page(cases[0], "ft-l")
    at.button(key="edit_apply").click().run()
    at.switch_page("app_pages/history.py").run()
    assert_clean(at)
    assert at.checkbox(key="history_active_0").value
    recall = at.table[0].value
    assert recall["phrasings"].tolist() == ["corpus", "held out"]
    assert float(recall["no edit"].iloc[0].split(" ")[0]) > 0.9  # the tiny model's recall, with its interval
    stale = re.search(r"leaving out the (\d+) facts", " ".join(c.value for c in at.caption))
    assert stale and int(stale.group(1)) >= 1  # the edited fact, at least
    at.text_input(key="history_out").input("edited")
    at.button(key="history_export").click().run()
    assert_clean(at)
    assert (tmp_path / "edited" / "edits.json").is_file() and "1 edits committed" in at.success[0].value
    at.button(key="history_export").click().run()
    assert "already exists" in errors(at)
    at.checkbox(key="history_active_0").uncheck().run()
    assert at.session_state["history"].active_edits() == []
    assert at.table[0].value["active edits"].tolist() == at.table[0].value["no edit"].tolist()
    at.switch_page("app_pages/edit.py").run()
    at.button(key="edit_apply").click().run()  # the same edit again, now on the model without the first
    assert at.dataframe[0].value["p(expected) before"].iloc[0] < 0.5


@pytest.mark.slow
def test_two_sessions_running_at_once_never_see_each_others_edits(cases, monkeypatch):
    """Session A has a ROME edit active; while A applies a second edit (computed and measured on
    top of its first), session B applies one to the same case: B's 'before' is the plain model's.
    All sessions share one loaded model."""
    loads = []
    original_load = SharedModel.load.__func__
    monkeypatch.setattr(SharedModel, "load", classmethod(
        lambda cls, ref, *machine: loads.append(ref) or original_load(cls, ref, *machine)))
    case = cases[0]
    plain, a, b = edit_page(case, "ft-l"), edit_page(case, "rome"), edit_page(case, "ft-l")
    plain.button(key="edit_apply").click().run()
    a.button(key="edit_apply").click().run()
    a.selectbox(key="edit_method").set_value("ft-l").run()
    unedited = plain.dataframe[0].value["p(expected) before"].iloc[0]

    a.button(key="edit_apply").click()
    b.button(key="edit_apply").click()
    threads = [threading.Thread(target=at.run) for at in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for at in (a, b):
        assert_clean(at)
    a_before = a.dataframe[0].value["p(expected) before"].iloc[0]
    b_before = b.dataframe[0].value["p(expected) before"].iloc[0]
    assert a_before > 0.5 > unedited  # A's measurements include A's own first edit ...
    assert b_before == pytest.approx(unedited, abs=1e-4)  # ... B's never do
    assert len(a.session_state["history"].entries) == 2 and len(b.session_state["history"].entries) == 1
    assert len(loads) <= 1  # loaded once (or before this test) and shared, not once per session
