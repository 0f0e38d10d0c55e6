"""Edit-latency benchmarks, every number of a comparison measured on one machine in one run.

``bench_rome`` (``workbench bench rome``): computing the key statistics once (no cache), the median
time of one edit with the statistics already in hand, and the median time to evaluate one edit
(every probe of its case measured before and after, the edit applied through hooks).

``bench_mend`` (``workbench bench mend``): the median time of a MEND edit and of a ROME edit (key
statistics in hand) on the same cases, and their ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from workbench.editing.editor import Editor
from workbench.editing.key_stats import compute_key_second_moment
from workbench.evaluation.cases import EditCase
from workbench.evaluation.metrics import measure


def bench_rome(model, cases: Sequence[EditCase], editor: Editor) -> dict:
    """Time ``editor`` (a ROME editor) on ``cases``; see the module docstring."""
    if editor.method != "rome":
        raise ValueError(f"bench rome needs a ROME editor, got {editor.method!r}")
    if not cases:
        raise ValueError("bench rome needs at least one edit case")
    hparams = editor.hparams
    started = time.perf_counter()
    compute_key_second_moment(model, hparams.layer, editor.texts(), hparams.key_stats_tokens, progress=False)
    statistics_s = time.perf_counter() - started
    editor.moment(hparams.layer)  # the timed edits below use the cached statistic
    edit_s, eval_s = [], []
    for case in cases:
        started = time.perf_counter()
        edit = editor(case.request)
        edit_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        measure(model, case)
        with edit.applied(model):
            measure(model, case)
        eval_s.append(time.perf_counter() - started)
    return {"layer": hparams.layer, "key_stats_tokens": hparams.key_stats_tokens, "n_edits": len(cases),
            "key_statistics_s": statistics_s, "median_edit_s": statistics.median(edit_s),
            "median_eval_s": statistics.median(eval_s),
            "edits_per_statistics": statistics_s / statistics.median(edit_s)}


def median_edit_seconds(editor: Editor, cases: Sequence[EditCase]) -> float:
    """The median wall time of ``editor`` on each case's request."""
    seconds = []
    for case in cases:
        started = time.perf_counter()
        editor(case.request)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def bench_mend(cases: Sequence[EditCase], mend: Editor, rome: Editor) -> dict:
    """MEND's and ROME's median edit latency on ``cases`` (each editor warmed up on the first case,
    so ROME's key statistic and MEND's network are in hand)."""
    if not cases:
        raise ValueError("bench mend needs at least one edit case")
    mend(cases[0].request)
    rome(cases[0].request)
    mend_s, rome_s = median_edit_seconds(mend, cases), median_edit_seconds(rome, cases)
    return {"n_edits": len(cases), "rome_layer": rome.hparams.layer, "mend_layers": list(mend.hparams.layers),
            "mend_edit_s": mend_s, "rome_edit_s": rome_s, "latency_ratio": mend_s / rome_s}
