"""Hyperparameters of editing methods: frozen dataclasses loaded from JSON files in ``hparams/``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar


def read_hparams(cls, path: str | Path, method: str) -> dict:
    """The JSON object at ``path``, checked against the fields of ``cls``: an unreadable file, a
    value that is not an object, unknown fields and a missing ``layer`` (for a method that has one)
    are ValueErrors naming them. JSON lists become tuples for the fields declared as tuples."""
    try:
        data = json.loads((path if hasattr(path, "read_text") else Path(path)).read_text())
    except OSError as error:
        raise ValueError(f"cannot read it: {error.strerror or error}") from None
    except ValueError as error:
        raise ValueError(f"not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object of {method} hyperparameters, got {json.dumps(data)}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {method} hyperparameters {sorted(unknown)}")
    if "layer" in names and "layer" not in data:
        raise ValueError(f"{method} hyperparameters need a 'layer'")
    for field in fields(cls):
        if str(field.type).startswith("tuple") and isinstance(data.get(field.name), list):
            data[field.name] = tuple(data[field.name])
    return data


def type_problem(annotation: str, value) -> str | None:
    """Why ``value`` is not of the type ``annotation`` names, or None. The forms the classes here
    use: ``int``, ``float`` (finite; an int is accepted), ``bool``, ``str``, ``X | None`` and
    ``tuple[X, ...]`` or ``tuple[X, X, X]``."""
    if annotation.endswith(" | None"):
        return None if value is None else type_problem(annotation.removesuffix(" | None"), value)
    if annotation.startswith("tuple["):
        items = annotation[len("tuple["):-1].split(", ")
        sized = items[-1] != "..."
        if not isinstance(value, tuple) or (sized and len(value) != len(items)):
            return f"expected a list ({annotation}), got {value!r}"
        problems = [type_problem(items[0], item) for item in value]
        return next((problem for problem in problems if problem), None)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {"bool": isinstance(value, bool), "str": isinstance(value, str),
          "int": number and isinstance(value, int),
          "float": number and math.isfinite(value)}[annotation]
    return None if ok else f"expected {'a finite float' if annotation == 'float' else annotation}, got {value!r}"


BOUND_CHECKS = {">": lambda value, bound: value > bound, ">=": lambda value, bound: value >= bound}


class HparamsFile:
    """``from_json`` and validation for a method's hyperparameter dataclass: every field is checked
    against its type (``type_problem``) and against ``bounds`` (``{field: (">" or ">=", bound)}``,
    for numbers and for each number of a tuple) when the object is made, so neither a file nor
    ``dataclasses.replace`` can make one with a wrong value. ``method_name`` names it in errors."""

    method_name: ClassVar[str]
    bounds: ClassVar[dict[str, tuple[str, float]]] = {}

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            problem = type_problem(str(field.type), value)
            if problem is None and field.name in self.bounds and value is not None:
                operator, bound = self.bounds[field.name]
                values = value if isinstance(value, tuple) else (value,)
                if not all(BOUND_CHECKS[operator](item, bound) for item in values):
                    problem = f"must be {operator} {bound}, got {value!r}"
            if problem:
                raise ValueError(f"{self.method_name} hyperparameter {field.name!r}: {problem}")

    @classmethod
    def from_json(cls, path: str | Path):
        """Read and check ``path``; every problem is a ValueError naming the file (and the field)."""
        try:
            return cls(**read_hparams(cls, path, cls.method_name))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None


@dataclass(frozen=True)
class RomeHparams(HparamsFile):
    """ROME (Meng et al. 2022), as in the reference implementation.

    ``layer``: the MLP output weight to edit (None: none chosen yet; every edit then names its
    layer or ``"auto"``). Keys (``k*``) are averaged over the request prompt
    and ``n_prefixes`` corpus prefixes of ``prefix_words`` words. The value vector is optimised
    with Adam (``v_lr``, at most ``v_steps`` forward passes, stopping once the total loss is below
    ``v_early_stop_loss``); the loss is the target's mean NLL plus ``kl_factor`` times
    KL(edited || original) of the next-token distribution after each ``kl_prompts`` template
    (filled with the subject) plus ``v_weight_decay`` times the norm of the change over the
    squared norm of the original output; the change's norm is clamped at ``clamp_norm_factor``
    times the original's (``workbench.editing.rome``). ``key_stats_tokens``
    keys from the model's corpus estimate E[k k^T].
    """

    method_name: ClassVar[str] = "ROME"
    bounds: ClassVar[dict[str, tuple[str, float]]] = {
        "layer": (">=", 0), "v_steps": (">=", 1), "v_lr": (">", 0), "v_weight_decay": (">=", 0),
        "v_early_stop_loss": (">=", 0), "clamp_norm_factor": (">", 0), "kl_factor": (">=", 0),
        "n_prefixes": (">=", 0), "prefix_words": (">=", 1), "key_stats_tokens": (">=", 1)}

    layer: int | None = None
    v_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    v_early_stop_loss: float = 0.05
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    kl_prompts: tuple[str, ...] = ("{} is a",)
    n_prefixes: int = 10
    prefix_words: int = 6
    key_stats_tokens: int = 100_000
    seed: int = 0


@dataclass(frozen=True)
class SpreadHparams(RomeHparams):
    """An edit spread over ``span`` consecutive MLP output weights ending at ``layer`` (the layer
    of the target residual ``z``), as MEMIT and AlphaEdit spread it: ROME's value optimisation and
    key averaging (every ``RomeHparams`` field means what it means there) at ``layer``."""

    method_name: ClassVar[str] = "MEMIT"
    bounds: ClassVar[dict[str, tuple[str, float]]] = {**RomeHparams.bounds, "span": (">=", 1)}

    span: int = 5

    def layers(self) -> tuple[int, ...]:
        """The edited layers: ``span`` consecutive layers ending at ``layer``, none below 0."""
        return tuple(range(max(0, self.layer - self.span + 1), self.layer + 1))


@dataclass(frozen=True)
class MemitHparams(SpreadHparams):
    """MEMIT (Meng et al. 2023), as in the reference implementation: each layer's update solved
    against ``mom2_update_weight`` times E[k k^T] (``workbench.editing.memit``)."""

    method_name: ClassVar[str] = "MEMIT"
    bounds: ClassVar[dict[str, tuple[str, float]]] = {**SpreadHparams.bounds, "mom2_update_weight": (">", 0)}

    mom2_update_weight: float = 15000.0


@dataclass(frozen=True)
class AlphaEditHparams(SpreadHparams):
    """AlphaEdit (Fang et al. 2025), as in the reference implementation: each layer's update
    projected onto the null space of E[k k^T] (the eigenvectors whose eigenvalue is below
    ``nullspace_threshold``) and regularised by ``l2_weight`` times the identity
    (``workbench.editing.alphaedit``)."""

    method_name: ClassVar[str] = "AlphaEdit"
    bounds: ClassVar[dict[str, tuple[str, float]]] = {
        **SpreadHparams.bounds, "nullspace_threshold": (">", 0), "l2_weight": (">", 0)}

    nullspace_threshold: float = 2e-2
    l2_weight: float = 10.0


@dataclass(frozen=True)
class FinetuneHparams(HparamsFile):
    """Fine-tuning one MLP output weight on the edit prompt (the post-training contrast).

    ``layer``: the MLP output weight to change (None: every edit names its layer or ``"auto"``).
    FT: Adam on the weight change for ``steps`` steps at ``lr`` (stopping once the target's mean
    NLL is below ``early_stop_nll``). FT-L additionally keeps every entry of the change within
    ``norm_constraint`` (an L-infinity ball around the original weight); None means no constraint.
    """

    method_name: ClassVar[str] = "fine-tuning"
    bounds: ClassVar[dict[str, tuple[str, float]]] = {
        "layer": (">=", 0), "steps": (">=", 1), "lr": (">", 0), "norm_constraint": (">", 0),
        "early_stop_nll": (">=", 0)}

    layer: int | None = None
    steps: int = 25
    lr: float = 5e-4
    norm_constraint: float | None = None
    early_stop_nll: float = 0.01


@dataclass(frozen=True)
class IkeHparams(HparamsFile):
    """IKE (Zheng et al. 2023): ``k`` demonstrations of the kinds copy, update and retain in
    ``proportions`` (the paper's 1:3:4), chosen by ``retrieval`` (``"knn"``: the most similar to the
    new fact; ``"random"``), with ``reserve_tokens`` of the model's context kept free for the prompt
    and its answer; ``request_demonstration`` adds the request itself as a last copy demonstration,
    as the authors' code does; ``seed`` draws the demonstrations' counterfactuals (and the random
    retrieval)."""

    method_name: ClassVar[str] = "IKE"
    bounds: ClassVar[dict[str, tuple[str, float]]] = {"k": (">=", 0), "proportions": (">=", 0),
                                                      "reserve_tokens": (">=", 1)}

    k: int = 8
    proportions: tuple[int, int, int] = (1, 3, 4)
    reserve_tokens: int = 48
    request_demonstration: bool = True
    retrieval: str = "knn"
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.retrieval not in ("knn", "random"):
            raise ValueError(f"IKE's retrieval is 'knn' or 'random', not {self.retrieval!r}")
        if sum(self.proportions) == 0:
            raise ValueError(f"IKE's proportions must not all be 0: {self.proportions}")


@dataclass(frozen=True)
class MendHparams(HparamsFile):
    """MEND (Mitchell et al. 2022), see ``workbench.editing.mend``.

    ``layers``: the MLP layers edited (negative numbers count from the last layer); ``matrices``:
    which of their weights, ``"out"`` (the output projection) and/or ``"in"`` (the input projection;
    gate and up in a gated MLP). ``editor``: the editor network's shape, ``"bottleneck"`` (one
    residual block of width ``rank``, scale and shift inside it) or ``"reference"`` (the authors':
    two residual blocks at full width of rank ``min(rank, width)``, scale and shift at full width);
    one editor per weight shape, with a scale and shift per edited weight. ``step_size_init``: the
    per-weight step sizes' start.

    Training: ``train_steps`` Adam steps at ``lr`` (the log step sizes at ``step_size_lr``), the
    gradient's norm clipped at ``grad_clip`` (0: not clipped), on batches of ``batch_size``
    training edits; the loss is ``edit_weight`` times the NLL of the new target after a paraphrase
    of the edit prompt plus ``locality_weight`` times the KL divergence, at every token of an
    unrelated statement (and of a same-relation neighbour's if ``neighbour_locality``), of the
    edited model from the unedited one. Every ``validation_every`` steps the same loss is measured
    on ``validation_edits`` edits of held-out training facts; the editor kept is the one of the
    lowest validation loss (``mend_training``).
    """

    method_name: ClassVar[str] = "MEND"
    bounds: ClassVar[dict[str, tuple[str, float]]] = {
        "rank": (">=", 1), "step_size_init": (">", 0), "train_steps": (">=", 0), "batch_size": (">=", 1),
        "lr": (">", 0), "step_size_lr": (">=", 0), "grad_clip": (">=", 0), "edit_weight": (">=", 0),
        "locality_weight": (">=", 0), "validation_edits": (">=", 1), "validation_every": (">=", 1)}

    layers: tuple[int, ...] = (-3, -2, -1)
    matrices: tuple[str, ...] = ("out",)
    editor: str = "bottleneck"
    rank: int = 64
    step_size_init: float = 1e-4
    train_steps: int = 1500
    batch_size: int = 8
    lr: float = 1e-3
    step_size_lr: float = 1e-2
    grad_clip: float = 0.0
    edit_weight: float = 1.0
    locality_weight: float = 1.0
    neighbour_locality: bool = True
    validation_edits: int = 64
    validation_every: int = 250
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not self.layers:
            raise ValueError("MEND hyperparameter 'layers': name at least one layer")
        if not self.matrices or set(self.matrices) - {"in", "out"} or len(set(self.matrices)) < len(self.matrices):
            raise ValueError(f"MEND's matrices are 'in' and/or 'out', each once, not {self.matrices!r}")
        if self.editor not in ("bottleneck", "reference"):
            raise ValueError(f"MEND's editor is 'bottleneck' or 'reference', not {self.editor!r}")
