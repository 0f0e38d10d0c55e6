"""What the Streamlit dashboard (``apps/``) computes, kept apart from its pages.

``session``: the model shared by every browser session (loaded once, used under a lock) and
each session's own history of edits, applied as hooks only while that session uses the model;
``activations``: how an edit changes the residual stream, the MLP outputs and the edit site's
key and value; ``ui``: the Streamlit glue every page uses (the shared model, the session's
history, progress bars and errors shown in the page).
"""
