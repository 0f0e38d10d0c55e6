"""The locator: from a trace (or an average of traces) to the MLP weight an editor should change."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.core.sites import EditSite
from workbench.model.architecture import mlp_output_site
from workbench.tracing.groups import LAST_SUBJECT, TOKEN_GROUPS, grouped
from workbench.tracing.trace import TraceResult

WEAK_SHARE = 0.5


@dataclass(frozen=True)
class Location:
    """The chosen edit site and the evidence for it.

    ``last_subject_effect`` is the MLP indirect effect at the subject's last token in the chosen
    layer; ``strongest_*`` name the largest MLP effect over every token group and layer;
    ``last_subject_share`` is their ratio. ``warning`` is set when that share is below
    ``WEAK_SHARE``: the fact then mostly lives elsewhere and a ROME-style edit at the subject's
    last token is not expected to work.
    """

    site: EditSite
    last_subject_effect: float
    strongest_group: str
    strongest_layer: int
    strongest_effect: float
    last_subject_share: float
    warning: str | None

    def to_dict(self) -> dict:
        return {"layer": self.site.layer, "module": self.site.module, "orientation": self.site.orientation,
                "key_hook": self.site.key_hook, "output_hook": self.site.output_hook,
                "last_subject_effect": self.last_subject_effect, "strongest_group": self.strongest_group,
                "strongest_layer": self.strongest_layer, "strongest_effect": self.strongest_effect,
                "last_subject_share": self.last_subject_share, "warning": self.warning}


def locate_from_effects(model, mlp_effects: np.ndarray) -> Location:
    """Pick the layer with the largest MLP indirect effect at the subject's last token.

    ``mlp_effects`` is ``[n_groups, n_layers]`` (groups as in ``groups.TOKEN_GROUPS``).
    """
    last_subject = mlp_effects[LAST_SUBJECT]
    layer = int(np.nanargmax(last_subject))
    group_index, strongest_layer = np.unravel_index(np.nanargmax(mlp_effects), mlp_effects.shape)
    strongest = float(mlp_effects[group_index, strongest_layer])
    share = float(last_subject[layer] / strongest) if strongest > 0 else 0.0
    warning = None
    if share < WEAK_SHARE:
        warning = (f"the subject's last token carries little of the MLP effect ({share:.0%} of the strongest, "
                   f"which is at the {TOKEN_GROUPS[group_index]} in layer {strongest_layer}); "
                   "a ROME-style edit at the subject's last token is not expected to work here")
    return Location(mlp_output_site(model, layer), float(last_subject[layer]), TOKEN_GROUPS[group_index],
                    int(strongest_layer), strongest, share, warning)


def locate_from_trace(model, trace: TraceResult) -> Location:
    if "mlp" not in trace.grids:
        raise ValueError("the locator needs the MLP grid: trace with kinds including 'mlp'")
    return locate_from_effects(model, grouped(trace.indirect_effect("mlp"), trace.subject_span))
