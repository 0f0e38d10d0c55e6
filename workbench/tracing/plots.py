"""Heatmaps of causal traces in the manner of Meng et al. (2022): one panel per kind."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from workbench.core.plotting import plt, save_figure
from workbench.tracing.average import AverageTrace
from workbench.tracing.groups import TOKEN_GROUPS
from workbench.tracing.trace import TraceResult

TITLES = {"resid": "restoring the residual stream", "mlp": "restoring MLP outputs",
          "attn": "restoring attention outputs"}
COLOURS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}


def plot_trace(trace: TraceResult, path: str | Path, overwrite: bool = False) -> list[Path]:
    """``trace_figure`` saved as PNG and SVG."""
    return save_figure(trace_figure(trace), path, overwrite)


def trace_figure(trace: TraceResult, chosen_layer: int | None = None) -> Figure:
    """Three panels (tokens x layers, colour = answer probability); subject tokens marked with *.
    ``chosen_layer``: the locator's layer, outlined in the MLP panel at the subject's last token."""
    kinds = list(trace.grids)
    start, end = trace.subject_span
    labels = [f"{token!r}*" if start <= i < end else repr(token) for i, token in enumerate(trace.tokens)]
    figure, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 0.32 * len(labels) + 1.6),
                                squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        image = axis.imshow(trace.grids[kind], cmap=COLOURS[kind], aspect="auto",
                            vmin=min(trace.corrupted_prob, trace.grids[kind].min()))
        axis.set_yticks(range(len(labels)), labels if axis is axes[0][0] else [""] * len(labels))
        axis.set_xlabel("layer" if kind == "resid" else f"centre of a window of {trace.config.window} layers")
        figure.colorbar(image, ax=axis)
        title = TITLES[kind]
        if kind == "mlp" and chosen_layer is not None:
            axis.add_patch(Rectangle((chosen_layer - 0.5, end - 1.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
            title += f"\n(outlined: the locator's layer {chosen_layer})"
        axis.set_title(title, fontsize=9)
    figure.suptitle(y=1.02, t=f"p({trace.answer!r}) after '{trace.prompt}'  (clean {trace.clean_prob:.2f}, "
                    f"corrupted {trace.corrupted_prob:.2f})", fontsize=9)
    return figure


def plot_average(average: AverageTrace, path: str | Path, overwrite: bool = False) -> list[Path]:
    """``average_figure`` saved as PNG and SVG."""
    return save_figure(average_figure(average), path, overwrite)


def average_figure(average: AverageTrace) -> Figure:
    """Three panels of the mean indirect effect, token groups x layers."""
    kinds = list(average.effects)
    figure, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.2), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        image = axis.imshow(average.effects[kind], cmap=COLOURS[kind], aspect="auto")
        axis.set_yticks(range(len(TOKEN_GROUPS)), TOKEN_GROUPS if axis is axes[0][0] else [""] * len(TOKEN_GROUPS))
        axis.set_xlabel("layer")
        axis.set_title(f"average indirect effect,\n{TITLES[kind]}", fontsize=9)
        figure.colorbar(image, ax=axis)
    figure.suptitle(y=1.08, t=f"{average.n_facts} known facts (clean p {average.mean_clean_prob:.2f}, "
                    f"corrupted p {average.mean_corrupted_prob:.2f})", fontsize=9)
    return figure
