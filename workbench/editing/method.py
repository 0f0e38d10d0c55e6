"""What an editing method is to the workbench: one protocol every method implements.

A method declares its name, its hyperparameter class and whether an edit of it is placed at one
layer (``takes_layer``: ROME, FT, FT-L); it says what it prepares once for a model (``prepare``:
ROME's key statistics, IKE's demonstration pool and its embeddings, MEND's trained editor) and how
it computes an edit from a request (``compute``, pure: the model is left exactly as it was found;
the ``Edit`` holds weight deltas or a prompt context). ``for_case`` lets a method adapt its
hyperparameters to everything an evaluation will ask of a case (IKE keeps room for the longest
prompt and answer), ``edited_layers`` says for tables what an edit changes, and ``main_hparams`` names the
hyperparameters a user most often changes.

An edit of a sequence is computed on the model as already edited: the ``Editor`` applies the
earlier edits through hooks and asks the method for its state after them (``prepared_after``).

The registry (``workbench.editing.registry``) maps names to methods; ``Editor`` drives them. A
method's prepared state is always made with no hook applied to the model (``Editor.prepared``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from workbench.core.cases import EditCase
from workbench.core.edit import Edit, EditRequest


@dataclass(frozen=True)
class Resources:
    """What methods may prepare from besides the model: ``facts``, what the model learned outside
    the evaluated cases (its fact world, or the train records of the case file it was trained on;
    None for a model the workbench did not train); ``stats_corpus``, a text file (one text per
    line) for key statistics, else the world's corpus; ``checkpoint``, a trained MEND editor's
    directory, else the one found by the model's weight fingerprint."""

    facts: Any = None
    stats_corpus: str | Path | None = None
    checkpoint: str | Path | None = None


class EditingMethod(ABC):
    """One editing method (see the module docstring). ``name`` is how users and files name it."""

    name: str
    hparams_class: ClassVar[type]
    takes_layer: ClassVar[bool] = False
    in_context: ClassVar[bool] = False  # its edits are a prompt context, not weight deltas (IKE)
    edits_batches: ClassVar[bool] = False  # compute_batch solves many requests together (MEMIT, AlphaEdit)
    # The numeric hyperparameters users most often change (the dashboard offers them).
    main_hparams: tuple[str, ...] = ()

    def default_hparams(self):
        """The method's own defaults, for a model the workbench has no tuned file for (no layer)."""
        return self.hparams_class()

    def prepare(self, model, hparams, resources: Resources) -> Any:
        """What every edit of ``model`` with ``hparams`` needs, made once; None if nothing."""
        return None

    @abstractmethod
    def compute(self, model, request: EditRequest, hparams, prepared) -> Edit:
        """The edit of ``request`` (``hparams.layer`` already chosen for a layer method)."""

    def compute_batch(self, model, requests: list[EditRequest], hparams, prepared) -> Edit:
        """One edit of all ``requests`` solved together (only where ``edits_batches``)."""
        raise NotImplementedError(f"{self.name} has no batch form")

    def prepared_after(self, prepared, earlier: Sequence[Edit]):
        """The prepared state for an edit computed after ``earlier`` edits (applied to the model
        through hooks while it is computed): the same by default; AlphaEdit adds the keys of the
        earlier edits to those its updates preserve."""
        return prepared

    def for_case(self, model, case: EditCase, hparams):
        """``hparams`` for editing ``case``, knowing every prompt the evaluation will ask of it."""
        return hparams

    def edited_layers(self, hparams, n_layers: int) -> str:
        """What an edit changes, for tables: its layer(s), or ``context`` for an in-context edit."""
        return str(hparams.layer)
