"""Edit: apply ROME, MEND, IKE, FT or FT-L to one fact, then compare predictions, metrics,
activations and causal traces before and after."""

import math

import streamlit as st

from workbench.app.dashboard import ui
from workbench.app.dashboard.activations import activation_change_figure, site_figure
from workbench.app.dashboard.inspection import inspect_edit, prediction_rows, traces_before_after
from workbench.core.edit import applied_edits
from workbench.editing.registry import METHODS
from workbench.tracing.plots import trace_figure

st.header("Edit")
shared = ui.shared_model()
history = ui.history()
base = history.active_edits()
if base:
    st.caption(f"edits are computed and compared on the model with this session's {len(base)} active edits")
prompt, subject, answer, case = ui.fact_input(shared, "edit")
target = st.text_input("new target" + (" (empty: the case's own)" if case else ""), key="edit_target")
target = target or (case.request.target_new if case else "")
method = st.selectbox("method", list(METHODS), key="edit_method")
hparams, layer = ui.hparams_input(shared, method, "edit")

if st.button("Apply edit", key="edit_apply", type="primary"):
    with ui.shown_errors(), st.spinner(f"computing the {method} edit and measuring it"), shared.use() as model:
        with applied_edits(model, base):
            request = ui.edit_request(model, prompt, subject, answer, target)
            edit = shared.editor(method, hparams)(request, layer)
        st.session_state["edit_inspection"] = inspect_edit(model, edit, case, base)
        st.session_state.pop("edit_traces", None)
        history.add(edit)

if "edit_inspection" in st.session_state:
    inspection = st.session_state["edit_inspection"]
    edit = inspection.edit
    where = f"layer{'s' * (len(edit.layers) > 1)} {', '.join(map(str, edit.layers))}" if edit.layers \
        else "the prompt's context"
    st.success(f"{edit.method.upper()} edit of {where} in {edit.timings.get('total_s', 0):.2f} s: "
               f"{edit.request.prompt!r} → {edit.request.target_new!r} (was {edit.request.ground_truth!r})")
    if edit.details:
        st.json(edit.details, expanded=False)
    st.subheader("Predictions before and after")
    st.dataframe(prediction_rows(inspection), key="edit_predictions")
    if inspection.metrics:
        st.subheader("This case's metrics")
        st.table({name: [f"{value:.3f}"] for name, value in inspection.metrics.items() if not math.isnan(value)})
    st.subheader("Activations: edited minus unedited, on the edit prompt")
    st.pyplot(activation_change_figure(inspection.activations))
    if not inspection.sites:
        st.info("An in-context edit changes the prompt, not a weight: there is no edit site.")
    for site in inspection.sites:
        st.write(f"**Layer {site.layer}**: ‖ΔW‖ {site.weight_change_norm:.4f} "
                 f"({site.weight_change_norm / site.weight_norm:.2%} of ‖W‖ {site.weight_norm:.2f}), "
                 f"rank {site.rank}; value change ‖Δv‖ {site.value_change_norm:.3f}")
        st.pyplot(site_figure(site))
    if st.button("Trace before and after the edit", key="edit_trace"):
        with ui.shown_errors(), st.spinner("tracing twice"), shared.use() as model:
            st.session_state["edit_traces"] = traces_before_after(model, edit, base)
    if "edit_traces" in st.session_state:
        for column, traced, label in zip(st.columns(2), st.session_state["edit_traces"], ("before", "after")):
            column.caption(f"{label} the edit")
            column.pyplot(trace_figure(traced))
