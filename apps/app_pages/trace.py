"""Trace: causal tracing of one fact (three heatmaps, the locator's layer outlined) and the
trace averaged over many known facts."""

import streamlit as st
import torch

from workbench.app.dashboard import ui
from workbench.core.sites import STREAM_HOOKS
from workbench.tracing.average import average_trace
from workbench.tracing.cases import facts_from_cases
from workbench.tracing.locator import locate_from_effects, locate_from_trace
from workbench.tracing.plots import average_figure, trace_figure
from workbench.tracing.trace import TraceConfig, trace_fact

st.header("Causal tracing")
shared = ui.shared_model()
edits = ui.history().active_edits()
if edits:
    st.caption(f"traced on the model with this session's {len(edits)} active edits")
prompt, subject, answer, _ = ui.fact_input(shared, "trace")
columns = st.columns(4)
samples = columns[0].number_input("noise samples", 1, 100, 10, key="trace_samples")
noise_scale = columns[1].number_input("noise scale (× embedding std)", 0.1, 20.0, 3.0, key="trace_noise")
window = columns[2].number_input("MLP/attention window (layers)", 1, shared.model.cfg.n_layers,
                                  min(10, shared.model.cfg.n_layers), key="trace_window")
kinds = columns[3].multiselect("restore", list(STREAM_HOOKS), list(STREAM_HOOKS), key="trace_kinds")
seed = st.number_input("seed", 0, 2**31 - 1, 0, key="trace_seed")

if st.button("Run trace", key="trace_run", type="primary"):
    with ui.shown_errors(), st.spinner("tracing every layer and token"), shared.use(edits) as model:
        config = TraceConfig(samples=samples, noise_scale=noise_scale, window=window, kinds=tuple(kinds))
        traced = trace_fact(model, prompt, subject, answer or None, config, torch.Generator().manual_seed(seed))
        location = locate_from_trace(model, traced) if "mlp" in kinds else None
        st.session_state["trace_result"] = (traced, location)

if "trace_result" in st.session_state:
    traced, location = st.session_state["trace_result"]
    st.pyplot(trace_figure(traced, location.site.layer if location else None))
    if location:
        st.write(f"The locator picks the MLP output weight of **layer {location.site.layer}** "
                 f"(`{location.site.module}`): indirect effect {location.last_subject_effect:.3f} at the "
                 f"subject's last token, {location.last_subject_share:.0%} of the strongest.")
        if location.warning:
            st.warning(location.warning)

st.subheader("Averaged trace")
if shared.world is None:
    st.info("Averaging needs a fact world; this model has none.")
else:
    n_facts = st.number_input("known facts to average", 1, 1000, 20, key="average_n")
    if st.button("Average", key="average_run"):
        with ui.shown_errors(), shared.use(edits) as model:
            config = TraceConfig(samples=samples, noise_scale=noise_scale, window=window, kinds=tuple(kinds))
            facts = facts_from_cases(ui.world_cases(shared))
            average = average_trace(model, facts, n_facts, config, seed,
                                    progress=ui.progress_bar())
            st.session_state["average_result"] = (average, locate_from_effects(model, average.effects["mlp"])
                                                   if "mlp" in kinds else None)
    if "average_result" in st.session_state:
        average, location = st.session_state["average_result"]
        st.pyplot(average_figure(average))
        if location:
            st.write(f"Over {average.n_facts} facts the locator picks **layer {location.site.layer}**.")
