"""A model handle: one model, loaded once from a reference, with everything that came with it.

``open_model(reference)`` resolves the reference once (a preset, a local directory or a hub name:
``loading.resolve_model``), loads the bridge and reads what a workbench-trained model carries: its
fact world (``world.json``), or the train records and corpus of the case file it was trained on
(``facts.json``, ``corpus.txt``). Commands, the API, the dashboard and the analyses hold a handle
instead of re-resolving the model for each of these.

The handle is the bridge plus a ``ModelSource`` (everything but the bridge), so that code which
is given only the bridge can be told its source (the API's ``load_model`` keeps the source of
each bridge it returns) without keeping the bridge alive. ``prepared`` is where editing methods
keep the state they prepare for this model (``editing.editor.Editor.for_model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.core.fingerprint import model_fingerprint
from workbench.model.loading import load_bridge, load_world, resolve_model
from workbench.model.sources import CORPUS_FILE, FACTS_FILE, TrainRecords
from workbench.world import World


@dataclass(frozen=True)
class ModelSource:
    """Where a model was loaded from and what came with it.

    ``location``: its directory, or the hub name; ``world``: the fact world of a model trained on
    one; ``facts``: what it learned outside the evaluated cases (the world, or a case file's train
    records; None for a model the workbench did not train); ``stats_corpus``: the texts file for key
    statistics of a model trained on a case file (None: the world's corpus); ``prepared``: editing
    methods' prepared state."""

    reference: str
    location: Path | str
    world: World | None
    facts: World | TrainRecords | None
    stats_corpus: Path | None
    prepared: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, reference: str | Path | None, location: Path | str) -> ModelSource:
        """What a model at ``location`` (resolved from ``reference``) carries."""
        if not isinstance(location, Path):
            return cls(str(reference), location, None, None, None)
        world = load_world(location)
        records = TrainRecords(location) if world is None and (location / FACTS_FILE).is_file() else None
        corpus = location / CORPUS_FILE
        return cls(str(reference or "default"), location, world, world or records,
                   corpus if corpus.is_file() else None)


@dataclass(frozen=True)
class ModelHandle:
    """A loaded model (``bridge``) and its ``source`` (see the module docstring)."""

    bridge: object
    source: ModelSource

    @property
    def directory(self) -> Path | None:
        """The model's local directory (None for a hub model)."""
        return self.source.location if isinstance(self.source.location, Path) else None

    @property
    def world(self) -> World | None:
        return self.source.world

    @property
    def facts(self) -> World | TrainRecords | None:
        return self.source.facts

    @property
    def stats_corpus(self) -> Path | None:
        return self.source.stats_corpus

    @property
    def prepared(self) -> dict:
        return self.source.prepared

    @property
    def trained_by_workbench(self) -> bool:
        """Whether the model carries the workbench's facts (trained here, or exported from such a
        model): its editing methods then use the tuned hyperparameter files."""
        return self.source.facts is not None

    def fingerprint(self) -> str:
        """The fingerprint of the weights as they are now (``model_fingerprint``)."""
        return model_fingerprint(self.bridge)


def open_model(reference: str | Path | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, progress: bool = True) -> ModelHandle:
    """The handle of ``reference`` (see the module docstring), resolved and loaded once."""
    location = resolve_model(reference, progress=progress)
    return ModelHandle(load_bridge(location, device=device, dtype=dtype), ModelSource.of(reference, location))
