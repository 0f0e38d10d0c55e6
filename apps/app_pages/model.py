"""Model: choose the model, see its architecture, size and recall, and browse its world's facts."""

import streamlit as st

from workbench.app.dashboard import ui
from workbench.model.presets import PRESETS

st.header("Model")
choices = [*PRESETS, "a local Hugging Face directory", "a hub name"]
kind = st.radio("model", choices, key="model_kind", horizontal=True)
reference = kind
if kind not in PRESETS:
    reference = st.text_input(kind, key="model_path", placeholder="/path/to/model" if "local" in kind else "gpt2-xl")
if st.button("Load", key="model_load"):
    with ui.shown_errors():
        ui.load_shared(reference.strip())
        if reference.strip() != ui.model_reference() and ui.history().entries:
            st.info(f"this session's {len(ui.history().entries)} edits belonged to the previous model: cleared")
            ui.history().entries.clear()
        st.session_state["model_reference"] = reference.strip()

shared = ui.shared_model()
st.subheader(f"{shared.reference}")
st.caption(f"loaded from {shared.source}")
with ui.shown_errors():
    summary = ui.model_summary(shared)
    st.table({key: [str(value)] for key, value in summary.items() if not isinstance(value, dict)})

if shared.world is None:
    st.info("This model has no fact world (the workbench did not train it): type facts on the Trace and Edit pages.")
else:
    st.subheader("Facts of the world")
    search = st.text_input("search subjects, relations and objects", key="facts_search")
    rows = ui.world_facts(shared, search)
    st.caption(f"{len(rows)} of {len(shared.world.facts)} facts")
    st.dataframe(rows, key="facts_table")
