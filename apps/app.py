"""The workbench dashboard: ``streamlit run apps/app.py`` or ``workbench dashboard [--model M]``.

Pages are thin: they lay out widgets and call ``workbench`` (``workbench.app.dashboard`` holds what
they compute). Every page uses the session's model with the session's active edits applied.
"""

import streamlit as st

from workbench.app.dashboard import ui

st.set_page_config(page_title="Knowledge-editing workbench", layout="wide")
pages = [
    st.Page("app_pages/model.py", title="Model", default=True),
    st.Page("app_pages/trace.py", title="Trace"),
    st.Page("app_pages/edit.py", title="Edit"),
    st.Page("app_pages/evaluate.py", title="Evaluate"),
    st.Page("app_pages/history.py", title="History"),
]
navigation = st.navigation(pages)
try:
    navigation.run()
finally:  # after the page, so that it counts what the page changed (even when the page stopped early)
    st.sidebar.caption(f"model: {ui.model_reference()} · active edits: {len(ui.history().active_edits())}")
