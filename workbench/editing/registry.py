"""The editing methods by name, and their hyperparameters.

Adding a method is adding its module (an ``EditingMethod``, see ``workbench.editing.method``)
and its entry here. Hyperparameters come from, in order: what the caller gives (a dataclass or a
JSON file), the tuned file of the workbench's own models (``tuned_hparams_file``: package data,
``<method>-default.json``), or, for a model the workbench did not train, the method's own
defaults (the dataclass's), with no layer: a layer method then needs a layer number or
``"auto"`` for every edit.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from workbench.editing.alphaedit import AlphaEdit
from workbench.editing.finetune import Finetune
from workbench.editing.ike import Ike
from workbench.editing.memit import Memit
from workbench.editing.mend import Mend
from workbench.editing.method import EditingMethod
from workbench.editing.rome import Rome

METHODS: dict[str, EditingMethod] = {method.name: method for method in (
    Rome(), Memit(), AlphaEdit(), Finetune("ft"), Finetune("ft-l"), Ike(), Mend())}
LAYER_METHODS = tuple(name for name, method in METHODS.items() if method.takes_layer)
WEIGHT_METHODS = tuple(name for name, method in METHODS.items() if not method.in_context)
TUNED_HPARAMS = files("workbench.editing") / "tuned"


def method_named(name: str) -> EditingMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown editing method {name!r}; choose from {sorted(METHODS)}") from None


def tuned_hparams_file(method: str, variant: str = "default") -> Traversable:
    """The tuned hyperparameter file ``<method>-<variant>.json`` of the workbench's own models."""
    return TUNED_HPARAMS / f"{method}-{variant}.json"


def method_hparams(method: str, hparams=None, tuned: bool = True):
    """``hparams`` as ``method``'s dataclass: itself, read from a JSON file, or (None) the tuned
    file (``tuned``: the model is one the workbench trained) or the method's own defaults."""
    method = method_named(method)
    if hparams is not None and not isinstance(hparams, (str, Path, Traversable)):
        return hparams
    if hparams is None and not tuned:
        return method.default_hparams()
    return method.hparams_class.from_json(hparams or tuned_hparams_file(method.name))
