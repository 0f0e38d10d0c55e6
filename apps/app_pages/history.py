"""History: the edits this session applied; turn any off; export the active ones into a new
model directory."""

import streamlit as st

from workbench.app.dashboard import ui
from workbench.app.dashboard.recall import session_recall
from workbench.app.dashboard.session import export_root
from workbench.evaluation.runner import format_metric

st.header("History")
shared = ui.shared_model()
history = ui.history()
if not history.entries:
    st.info("No edits yet in this session: apply one on the Edit page.")
    st.stop()
st.caption("Active edits are applied, as hooks, to everything this session runs; the shared model's weights are "
           "never written.")
for index, entry in enumerate(history.entries):
    active = st.checkbox(entry.label, entry.active, key=f"history_active_{index}")
    history.set_active(index, active)
    layers = ", ".join(map(str, entry.edit.layers)) or "context"
    st.caption(f"layers: {layers} · computed in {entry.edit.timings.get('total_s', 0):.2f} s")

if shared.world is not None:
    st.subheader("Everything else the model knows")
    probes = ui.recall_probes(shared)
    before = ui.unedited_recall(shared)
    after = session_recall(shared, history.active_edits(), probes)
    st.table({"phrasings": ["corpus", "held out"],
              "no edit": [format_metric(before["recall_corpus"]), format_metric(before["recall_heldout"])],
              "active edits": [format_metric(after["recall_corpus"]), format_metric(after["recall_heldout"])]})
    st.caption(f"top-1 recall of the world's facts on {len(probes.prompts)} prompts drawn at random, leaving out "
               f"the {after['stale_facts']} facts the active edits changed (with their two-hop and reverse facts); "
               "mean ± 95% interval; in-context edits are left out")

st.subheader("Export")
root = export_root()
name = st.text_input(f"new model directory under {root} (a name; it must not exist)", key="history_out")
if st.button("Commit the active edits into a new model directory", key="history_export"):
    with ui.shown_errors(), st.spinner("writing the edited model"):
        written = history.export(shared, name, root)
        st.success(f"wrote {written} with {len(history.active_edits())} edits committed; the loaded model is unchanged")
