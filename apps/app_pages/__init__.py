"""The dashboard's pages, one per task; each is run by Streamlit as a script."""
