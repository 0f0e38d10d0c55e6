"""Evaluate: run the harness on N edit cases for the chosen methods; the comparison table, its
bar chart, and downloads as JSON and CSV. Then a short sequence of edits per method: its curves
and the edits at which recall of untouched facts falls below 0.9 and 0.5 of its start."""

import json

import streamlit as st

from workbench.app.dashboard import ui
from workbench.app.dashboard.recall import RECALL_SAMPLE, sequence_comparison
from workbench.app.sequential_runs import sequence_summary, sequence_table
from workbench.core.io import json_safe
from workbench.editing.registry import METHODS, WEIGHT_METHODS
from workbench.evaluation.compare import (
    compare_methods,
    comparison_csv,
    comparison_figure,
    comparison_table,
    parse_method_specs,
    scores_table,
)
from workbench.evaluation.sequential import sequential_figure

st.header("Evaluate")
shared = ui.shared_model()
edits = ui.history().active_edits()
if shared.world is None:
    st.info("Evaluation uses the edit cases of the model's world; this model has none. "
            "Use `workbench eval --cases FILE` from the command line for a file of cases.")
    st.stop()
if edits:
    st.caption(f"evaluated on the model with this session's {len(edits)} active edits")
methods = st.multiselect("methods", list(METHODS), ["rome", "ft-l"], key="evaluate_methods")
n_cases = st.number_input("edit cases (test split)", 1, len(ui.world_cases(shared)), 10, key="evaluate_n")

if st.button("Evaluate", key="evaluate_run", type="primary"):
    with ui.shown_errors(), shared.use(edits) as model:
        compared = compare_methods(model, ui.world_cases(shared)[:n_cases], parse_method_specs(",".join(methods)),
                                   lambda spec: shared.editor(spec.method, spec.hparams_file),
                                   progress=ui.progress_bar())
        st.session_state["evaluate_table"] = {label: results for label, (results, _) in compared.items()}

if "evaluate_table" in st.session_state:
    table = st.session_state["evaluate_table"]
    st.markdown(comparison_table(table))
    st.markdown(scores_table(table))
    st.pyplot(comparison_figure(table))
    columns = st.columns(2)
    columns[0].download_button("comparison.json", json.dumps(json_safe(table), indent=1), "comparison.json",
                               "application/json", key="evaluate_json")
    columns[1].download_button("comparison.csv", comparison_csv(table), "comparison.csv", "text/csv",
                               key="evaluate_csv")

st.subheader("Edits in sequence")
st.caption("each method edits the same cases one after another, each edit computed on the model as already "
           f"edited; recall of the facts no edit changed is measured on {RECALL_SAMPLE} prompts drawn at random")
sequence_methods = st.multiselect("methods", list(WEIGHT_METHODS), ["rome", "memit", "alphaedit"],
                                  key="sequence_methods")
n_edits = st.number_input("edits", 2, len(ui.world_cases(shared)), 20, key="sequence_n")
every = st.number_input("measure after every", 1, 100, 5, key="sequence_every")
if st.button("Edit in sequence", key="sequence_run"):
    with ui.shown_errors():
        st.session_state["sequence_runs"] = sequence_comparison(
            shared, sequence_methods, ui.world_cases(shared)[:n_edits], every, edits, progress=ui.progress_bar())

if "sequence_runs" in st.session_state:
    runs = st.session_state["sequence_runs"]
    st.pyplot(sequential_figure(runs))
    st.markdown(sequence_table(sequence_summary(runs, 1)))
