"""Editing: edits as objects applied through hooks or committed (reversibly) into the weights."""
