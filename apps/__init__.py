"""The Streamlit dashboard (package data of the installed package: ``workbench.apps``)."""
