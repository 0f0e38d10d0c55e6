"""Second moment of MLP keys, C = E[k k^T], the covariance-like statistic ROME edits under.

Keys are the inputs of a layer's MLP output projection (``blocks.L.mlp.hook_post``), collected at
every token of a text corpus in batches of fixed-length windows (BOS first), until
``n_tokens`` keys are seen. They are always read from the model without the edits a caller
applied through hooks (``hooks_suspended``), since the statistic is shared by every caller.
Results are cached on disk under ``cache_root()/key-stats`` keyed by the model fingerprint, the
layer, the corpus fingerprint and the token count; files are written atomically and any file that
cannot be read, does not match its key or no longer has its recorded digest is recomputed, never
used. The package ships the default model's statistics for every layer (``shipped_root()/key-stats``,
read where the cache has none).
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.core.fingerprint import model_fingerprint, tensor_digest, texts_fingerprint
from workbench.core.io import read_text_file, write_text_atomic
from workbench.core.paths import cache_root, shipped_root
from workbench.core.sites import KEY_HOOK
from workbench.model.hooks import hooks_suspended
from workbench.world import CorpusConfig, World, corpus_rounds


def key_windows(tokenizer, texts: Sequence[str], window: int) -> Tensor:
    """``[n_windows, window]`` token ids: the texts joined (each after BOS) and cut into windows."""
    ids: list[int] = []
    for encoded in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        if tokenizer.bos_token_id is not None:
            ids.append(tokenizer.bos_token_id)
        ids.extend(encoded)
    usable = len(ids) // window * window
    if usable == 0:
        raise ValueError(f"the corpus has fewer than {window} tokens: too little text for key statistics")
    return torch.tensor(ids[:usable]).view(-1, window)


@torch.no_grad()
def compute_key_second_moment(model, layer: int, texts: Sequence[str], n_tokens: int, window: int = 128,
                              batch_size: int = 16, progress: bool = True) -> Float[Tensor, "d_mlp d_mlp"]:
    """E[k k^T] over the first ``n_tokens`` key vectors of ``texts``, accumulated in float64 on the
    model's device batch by batch, whatever the model's dtype; returned in float32 on the CPU.
    Windows are ``window`` tokens long, or the model's context where that is shorter."""
    window = min(window, model.cfg.n_ctx)
    windows = key_windows(model.tokenizer, texts, window)
    hook_name = KEY_HOOK.format(layer=layer)
    device = model.W_E.device
    total = torch.zeros(model.cfg.d_mlp, model.cfg.d_mlp, dtype=torch.float64, device=device)
    seen = 0
    bar = tqdm(total=n_tokens, desc=f"key statistics, layer {layer}", disable=not progress)
    with hooks_suspended(model):
        for begin in range(0, windows.shape[0], batch_size):
            _, cache = model.run_with_cache(windows[begin:begin + batch_size].to(device),
                                            names_filter=lambda name: name == hook_name)
            keys = cache[hook_name].reshape(-1, model.cfg.d_mlp)[: n_tokens - seen].double()
            total += keys.T @ keys
            seen += keys.shape[0]
            bar.update(keys.shape[0])
            if seen >= n_tokens:
                break
    bar.close()
    if seen < n_tokens:
        warnings.warn(f"the key-statistics corpus holds {seen} keys in whole windows of {window} tokens, fewer "
                      f"than the {n_tokens} asked for: layer {layer}'s statistic is the mean over those {seen}",
                      stacklevel=2)
    moment = (total / seen).float().cpu()
    if not torch.isfinite(moment).all():
        raise FloatingPointError(f"the key statistics of layer {layer} are not finite; nothing was cached")
    return moment


def _read_cache(path: Path) -> dict | None:
    """The cached entry at ``path``, or None when it is missing or cannot be read as one (whatever
    the reason: a truncated file, another format, a foreign pickle); such files are recomputed."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable cache file is simply recomputed
        return None
    return stored if isinstance(stored, dict) and isinstance(stored.get("moment"), Tensor) else None


def key_stats_entry(model, layer: int, texts: Sequence[str], n_tokens: int) -> tuple[dict, str]:
    """``(key, file name)`` of the cached statistic of ``model`` at ``layer`` over ``texts``."""
    key = {"model": model_fingerprint(model), "layer": layer, "corpus": texts_fingerprint(texts),
           "n_tokens": n_tokens}
    return key, f"{key['model']}-layer{layer}-{key['corpus']}-{n_tokens}.pt"


SHIPPED_DIGESTS = "digests.json"  # in shipped_root()/key-stats: each file's tensor_digest


def _shipped_digest(name: str) -> str | None:
    try:
        return json.loads((shipped_root() / "key-stats" / SHIPPED_DIGESTS).read_text()).get(name)
    except (OSError, ValueError):
        return None


def key_second_moment(model, layer: int, texts: Sequence[str], n_tokens: int, progress: bool = True,
                      cache_dir: Path | None = None) -> Float[Tensor, "d_mlp d_mlp"]:
    """``compute_key_second_moment``, cached on disk (see the module docstring); the shipped
    default model's statistics (``shipped_root()/key-stats``) are read where the cache has none.
    An entry is used only if its key matches and its statistic still has the digest recorded with
    it (in the file for the cache, in ``SHIPPED_DIGESTS`` for the shipped ones)."""
    key, name = key_stats_entry(model, layer, texts, n_tokens)
    directory = cache_dir or cache_root() / "key-stats"
    path = directory / name
    for candidate, shipped in ((path, False), (shipped_root() / "key-stats" / name, True)):
        stored = _read_cache(candidate)
        if stored is None or stored.get("key") != key or stored["moment"].shape != (model.cfg.d_mlp,) * 2:
            continue
        if tensor_digest(stored["moment"]) == (_shipped_digest(name) if shipped else stored.get("digest")):
            return stored["moment"]
    moment = compute_key_second_moment(model, layer, texts, n_tokens, progress=progress)
    entry = io.BytesIO()
    torch.save({"key": key, "moment": moment, "digest": tensor_digest(moment)}, entry)
    write_text_atomic(path, entry.getvalue(), overwrite=True)  # over a stale or damaged entry
    return moment


def statistics_texts(facts, corpus_file: str | Path | None = None) -> list[str]:
    """Texts for key statistics: a text file (one document per line), else the corpus of ``facts``
    (a fact world)."""
    if corpus_file:
        return [line for line in read_text_file(corpus_file, "corpus file").splitlines() if line.strip()]
    if not isinstance(facts, World):
        raise ValueError("this model has no fact world: give a statistics corpus (one text per line)")
    return next(corpus_rounds(facts, CorpusConfig(), set()))


class KeyStatistics:
    """ROME's prepared state for one model: the statistics texts (``statistics_texts``, read when
    first needed) and E[k k^T] per layer over ``n_tokens`` keys (``key_second_moment``, looked up
    once per layer)."""

    def __init__(self, model, facts, corpus_file: str | Path | None, n_tokens: int):
        self.model, self.n_tokens = model, n_tokens
        self._facts, self._corpus_file = facts, corpus_file
        self._texts: list[str] | None = None
        self._moments: dict[int, Tensor] = {}

    def texts(self) -> list[str]:
        if self._texts is None:
            self._texts = statistics_texts(self._facts, self._corpus_file)
        return self._texts

    def moment(self, layer: int) -> Float[Tensor, "d_mlp d_mlp"]:
        if layer not in self._moments:
            self._moments[layer] = key_second_moment(self.model, layer, self.texts(), self.n_tokens)
        return self._moments[layer]
