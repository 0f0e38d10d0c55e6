"""Fingerprints that key on-disk caches: of a model's weights and of a text corpus."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch

# Config fields that say where and with what a model was loaded, not what it is.
LOAD_FIELDS = ("_name_or_path", "transformers_version")


def model_fingerprint(model) -> str:
    """SHA-256 (first 16 hex digits) of the HF config (less ``LOAD_FIELDS``) and every parameter's
    bytes, in name order.

    Any change of any weight (a committed edit included) gives another fingerprint; loading the
    same files from another directory or with another transformers version gives the same one.
    """
    digest = hashlib.sha256()
    hf_model = model.original_model
    config = {key: value for key, value in hf_model.config.to_dict().items() if key not in LOAD_FIELDS}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, parameter in sorted(hf_model.state_dict().items()):
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of one tensor's bytes: which weights an edit was computed
    against, or whether a stored statistic is still the one written."""
    data = tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def texts_fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def weights_version(model: torch.nn.Module) -> tuple[int, ...]:
    """Every parameter's in-place write counter (``Tensor._version``), in order: it changes whenever
    any weight is written in place (a commit, a revert), at no cost, so state prepared from the
    weights can tell that it is stale without hashing them."""
    return tuple(parameter._version for parameter in model.parameters())
