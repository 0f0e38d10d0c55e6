"""Hyperparameters of editing methods: frozen dataclasses loaded from JSON files in ``hparams/``."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path


def read_hparams(cls, path: str | Path, method: str) -> dict:
    """The JSON object at ``path``, checked against the fields of ``cls``: unknown fields and a
    missing ``layer`` are clear errors naming them."""
    data = json.loads(Path(path).read_text())
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{path}: unknown {method} hyperparameters {sorted(unknown)}")
    if "layer" not in data:
        raise ValueError(f"{path}: {method} hyperparameters need a 'layer'")
    return data


@dataclass(frozen=True)
class RomeHparams:
    """ROME (Meng et al. 2022), as in the reference implementation.

    ``layer``: the MLP output weight to edit. Keys (``k*``) are averaged over the request prompt
    and ``n_prefixes`` corpus prefixes of ``prefix_words`` words. The value vector is optimised
    with Adam (``v_lr``, at most ``v_steps`` steps, stopping once the target's mean NLL is below
    ``v_early_stop_nll``); the loss adds ``kl_factor`` times the KL divergence of the next-token
    distribution after each ``kl_prompts`` template (filled with the subject) and
    ``v_weight_decay`` times the squared norm of the change relative to the original output,
    whose norm is clamped at ``clamp_norm_factor`` times the original's. ``key_stats_tokens``
    keys from the model's corpus estimate E[k k^T].
    """

    layer: int
    v_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    v_early_stop_nll: float = 0.05
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    kl_prompts: tuple[str, ...] = ("{} is a",)
    n_prefixes: int = 10
    prefix_words: int = 6
    key_stats_tokens: int = 100_000
    seed: int = 0

    @classmethod
    def from_json(cls, path: str | Path) -> RomeHparams:
        data = read_hparams(cls, path, "ROME")
        if "kl_prompts" in data:
            data["kl_prompts"] = tuple(data["kl_prompts"])
        return cls(**data)


@dataclass(frozen=True)
class FinetuneHparams:
    """Fine-tuning one MLP output weight on the edit prompt (the post-training contrast).

    FT: Adam on the weight change for ``steps`` steps at ``lr`` (stopping once the target's mean
    NLL is below ``early_stop_nll``). FT-L additionally keeps every entry of the change within
    ``norm_constraint`` (an L-infinity ball around the original weight); None means no constraint.
    """

    layer: int
    steps: int = 25
    lr: float = 5e-4
    norm_constraint: float | None = None
    early_stop_nll: float = 0.01

    @classmethod
    def from_json(cls, path: str | Path) -> FinetuneHparams:
        return cls(**read_hparams(cls, path, "fine-tuning"))
