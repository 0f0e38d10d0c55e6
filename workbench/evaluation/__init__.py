"""Evaluation of edits: edit cases from several formats, metrics, runs and tables."""
