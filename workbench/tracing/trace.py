"""Causal tracing of one fact, batched through TransformerLens hooks.

Conventions (after Meng et al. 2022, "Locating and Editing Factual Associations in GPT"):

- the prompt is encoded with BOS in front; positions count it;
- corruption adds Gaussian noise to the token embeddings (``hook_embed``) of the subject's
  tokens; its scale is ``noise_scale`` times the standard deviation of the entries of the model's
  token-embedding matrix; noise samples come from the ``torch.Generator`` passed in;
- a restored run copies one clean activation back into a corrupted run: for ``resid`` the block
  output (``blocks.L.hook_resid_post``) at one layer and token; for ``mlp`` and ``attn`` the
  outputs (``blocks.L.hook_mlp_out`` / ``blocks.L.hook_attn_out``) at one token in a window of
  ``window`` consecutive layers centred on L (clipped to the model's depth);
- the score is the probability of the answer's first token at the last position, averaged over
  the noise samples. Grids are ``[n_tokens, n_layers]``.

All restorations of one kind run as rows of batched forward passes (``row_budget`` rows at most
per pass; by default as many as the free memory allows, ``model.memory.rows_that_fit``), never one
forward pass per cell, and cells whose result is known without a forward
pass (``needs_forward_pass``) are filled in directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.sites import EMBED_HOOK, STREAM_HOOKS, stream_hook
from workbench.model.memory import rows_that_fit
from workbench.model.tokens import encode_prompt, encode_target, require_fits_context, subject_token_span


@dataclass(frozen=True)
class TraceConfig:
    samples: int = 10
    noise_scale: float = 3.0
    window: int = 10
    kinds: tuple[str, ...] = ("resid", "mlp", "attn")
    row_budget: int | None = None

    def __post_init__(self):
        unknown = set(self.kinds) - set(STREAM_HOOKS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {sorted(STREAM_HOOKS)}, got {self.kinds}")
        if self.samples < 1 or self.window < 1 or (self.row_budget is not None and self.row_budget < 1):
            raise ValueError("samples, window and row_budget must all be at least 1")
        if not self.noise_scale > 0:
            raise ValueError(f"noise_scale must be positive, got {self.noise_scale}")


@dataclass(frozen=True)
class TraceResult:
    """One traced fact. ``grids[kind][token, layer]`` is the restored answer probability."""

    prompt: str
    subject: str
    answer: str
    answer_token: int
    tokens: list[str]
    subject_span: tuple[int, int]
    clean_prob: float
    corrupted_prob: float
    grids: dict[str, np.ndarray]
    config: TraceConfig
    noise_std: float
    n_layers: int

    def indirect_effect(self, kind: str) -> np.ndarray:
        """Restored minus corrupted probability, ``[n_tokens, n_layers]``."""
        return self.grids[kind] - self.corrupted_prob

    @classmethod
    def from_dict(cls, data: dict, config: TraceConfig) -> TraceResult:
        """The trace ``to_dict`` wrote, traced with ``config``."""
        return cls(data["prompt"], data["subject"], data["answer"], data["answer_token"], data["tokens"],
                   tuple(data["subject_span"]), data["clean_prob"], data["corrupted_prob"],
                   {kind: np.asarray(grid, dtype=np.float32) for kind, grid in data["grids"].items()},
                   config, data["noise_std"], data["n_layers"])

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt, "subject": self.subject, "answer": self.answer,
            "answer_token": self.answer_token, "tokens": self.tokens, "subject_span": list(self.subject_span),
            "clean_prob": self.clean_prob, "corrupted_prob": self.corrupted_prob,
            "grids": {kind: grid.tolist() for kind, grid in self.grids.items()},
            "samples": self.config.samples, "noise_scale": self.config.noise_scale, "noise_std": self.noise_std,
            "window": self.config.window, "n_layers": self.n_layers,
        }


def layer_window(layer: int, window: int, n_layers: int) -> range:
    """The ``window`` consecutive layers centred on ``layer``, clipped to ``[0, n_layers)``."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def embedding_noise(model, n_samples: int, n_positions: int, scale: float,
                    generator: torch.Generator) -> tuple[Float[Tensor, "sample pos d_model"], float]:
    """Noise for ``n_positions`` subject tokens and its standard deviation."""
    std = scale * model.W_E.detach().float().std().item()
    noise = torch.randn(n_samples, n_positions, model.cfg.d_model, generator=generator) * std
    return noise, std


def _answer_probability(logits: Float[Tensor, "rows pos d_vocab"], answer_token: int) -> Float[Tensor, " rows"]:
    return logits[:, -1].float().softmax(-1)[:, answer_token]


def row_budget(model, config: TraceConfig, tokens: Tensor) -> int:
    """The rows of one forward pass: the config's, else what the free memory allows."""
    return config.row_budget or rows_that_fit(model, tokens.shape[-1])


@torch.no_grad()
def restored_probabilities(model, tokens: Int[Tensor, " pos"], span: tuple[int, int],
                           noise: Float[Tensor, "sample span d_model"], answer_token: int,
                           restores: list[tuple[str, list[int], int]],
                           clean: dict[str, Tensor], row_budget: int) -> Float[Tensor, "restore sample"]:
    """The answer probability of every (restore, noise sample) row, in batches of ``row_budget``.

    A restore is ``(kind, layers, positions)``: copy the clean activations of that kind at every
    one of ``positions`` into every layer listed. ``clean[hook name]`` holds clean activations
    ``[pos, d]``. An empty ``layers`` list gives the plain corrupted run.
    """
    n_samples = noise.shape[0]
    device = tokens.device
    rows = [(r, s) for r in range(len(restores)) for s in range(n_samples)]
    out = torch.empty(len(rows))
    for begin in range(0, len(rows), row_budget):
        chunk = rows[begin:begin + row_budget]
        sample_index = torch.tensor([s for _, s in chunk], device=device)
        hooks = [(EMBED_HOOK, corruption_hook(noise.to(device)[sample_index], span))]
        hooks += _restore_hooks([restores[r] for r, _ in chunk], clean, device)
        with model.hooks(fwd_hooks=hooks):
            logits = model(tokens.unsqueeze(0).expand(len(chunk), -1))
        out[begin:begin + len(chunk)] = _answer_probability(logits, answer_token).cpu()
    return out.view(len(restores), n_samples)


def corruption_hook(batch_noise: Float[Tensor, "rows span d_model"], span: tuple[int, int]):
    """A ``hook_embed`` hook adding ``batch_noise`` (one row per batch row) to the subject's embeddings."""
    def corrupt(embed, hook):
        embed[:, span[0]:span[1]] += batch_noise.to(embed.dtype)
        return embed
    return corrupt


def _restore_hooks(chunk_restores, clean: dict[str, Tensor], device) -> list:
    """One hook per hook point that some row restores; each writes the clean values into its rows."""
    targets: dict[str, tuple[list[int], list[int]]] = {}
    for row, (kind, layers, restored_positions) in enumerate(chunk_restores):
        for layer in layers:
            rows_list, positions = targets.setdefault(stream_hook(kind, layer), ([], []))
            rows_list.extend([row] * len(restored_positions))
            positions.extend(restored_positions)

    def make_hook(name, rows_list, positions):
        row_index = torch.tensor(rows_list, device=device)
        position_index = torch.tensor(positions, device=device)
        values = clean[name][position_index]

        def restore(activation, hook):
            activation[row_index, position_index] = values.to(activation.dtype)
            return activation
        return restore

    return [(name, make_hook(name, rows_list, positions)) for name, (rows_list, positions) in targets.items()]


def needs_forward_pass(kind: str, position: int, layer: int, span: tuple[int, int], n_tokens: int,
                       n_layers: int) -> bool:
    """False for cells whose result is known without running them: a position before the subject
    is the same in the clean and the corrupted run (restoring it changes nothing), and the residual
    stream after the last layer reaches the logits only at the last position (which then gives
    the clean run back)."""
    if position < span[0]:
        return False
    return not (kind == "resid" and layer == n_layers - 1)


@dataclass(frozen=True)
class _CleanRun:
    """One fact's clean run, ready for corrupted and restored runs."""

    tokens: Int[Tensor, " pos"]
    span: tuple[int, int]
    answer: str
    answer_token: int
    clean: dict[str, Tensor]
    clean_prob: float
    noise: Float[Tensor, "sample span d_model"]
    noise_std: float


def _clean_run(model, prompt: str, subject: str, answer: str | None, hook_names: list[str], config: TraceConfig,
               generator: torch.Generator) -> _CleanRun:
    tokenizer = model.tokenizer
    span = subject_token_span(tokenizer, prompt, subject)
    tokens = torch.tensor(encode_prompt(tokenizer, prompt), device=model.W_E.device)
    logits, cache = model.run_with_cache(tokens.unsqueeze(0), names_filter=lambda name: name in hook_names)
    if answer is None:
        answer_token = int(logits[0, -1].argmax())
        answer = tokenizer.decode([answer_token]).strip()
    else:
        answer_token = encode_target(tokenizer, answer)[0]
    noise, std = embedding_noise(model, config.samples, span[1] - span[0], config.noise_scale, generator)
    return _CleanRun(tokens, span, answer, answer_token, {name: cache[name][0] for name in hook_names},
                     float(_answer_probability(logits, answer_token)[0]), noise, std)


@torch.no_grad()
def trace_fact(model, prompt: str, subject: str, answer: str | None = None, config: TraceConfig | None = None,
               generator: torch.Generator | None = None) -> TraceResult:
    """Trace one fact: clean, corrupted and restored runs for every layer x token of each kind.

    ``answer`` defaults to the model's own top prediction after the prompt (decoded token).
    ``generator`` seeds the noise (a fresh ``torch.Generator().manual_seed(0)`` if None).
    """
    config = config or TraceConfig()
    require_fits_context(model, model.tokenizer, [prompt], [answer or ""])
    hook_names = [stream_hook(k, layer) for k in config.kinds for layer in range(model.cfg.n_layers)]
    run = _clean_run(model, prompt, subject, answer, hook_names, config,
                     generator or torch.Generator().manual_seed(0))
    n_layers, n_tokens = model.cfg.n_layers, run.tokens.shape[0]
    cells = [(kind, position, layer) for kind in config.kinds for position in range(n_tokens)
             for layer in range(n_layers)]
    computed = [cell for cell in cells if needs_forward_pass(*cell, run.span, n_tokens, n_layers)]
    restores = [("resid", [], [])]  # the corrupted run itself
    restores += [(kind, list(layer_window(layer, 1 if kind == "resid" else config.window, n_layers)), [position])
                 for kind, position, layer in computed]
    probabilities = restored_probabilities(model, run.tokens, run.span, run.noise, run.answer_token, restores,
                                           run.clean, row_budget(model, config, run.tokens)).mean(dim=1)
    corrupted_prob = float(probabilities[0])
    grids = {kind: np.full((n_tokens, n_layers), corrupted_prob, dtype=np.float32) for kind in config.kinds}
    if "resid" in grids:  # the whole clean residual stream at the last position of the last layer
        grids["resid"][-1, -1] = run.clean_prob
    for (kind, position, layer), probability in zip(computed, probabilities[1:].tolist()):
        grids[kind][position, layer] = probability
    return TraceResult(
        prompt=prompt, subject=subject, answer=run.answer, answer_token=run.answer_token,
        tokens=[model.tokenizer.decode([t]) for t in run.tokens.tolist()], subject_span=run.span,
        clean_prob=run.clean_prob, corrupted_prob=corrupted_prob,
        grids=grids, config=config, noise_std=run.noise_std, n_layers=n_layers,
    )


@torch.no_grad()
def whole_subject_restorations(model, prompt: str, subject: str, answer: str | None = None,
                               config: TraceConfig | None = None,
                               generator: torch.Generator | None = None) -> tuple[float, float, np.ndarray]:
    """``(clean p, corrupted p, restored p per layer)``: the residual stream at *every* subject token
    restored together at one layer. Where this is high but the last subject token alone
    (``trace_fact``) is low, the subject's identity is spread over its tokens, not assembled at
    the last one."""
    config = config or TraceConfig()
    n_layers = model.cfg.n_layers
    hook_names = [stream_hook("resid", layer) for layer in range(n_layers)]
    run = _clean_run(model, prompt, subject, answer, hook_names, config,
                     generator or torch.Generator().manual_seed(0))
    subject_positions = list(range(*run.span))
    restores = [("resid", [], []), *(("resid", [layer], subject_positions) for layer in range(n_layers))]
    probabilities = restored_probabilities(model, run.tokens, run.span, run.noise, run.answer_token, restores,
                                           run.clean, row_budget(model, config, run.tokens)).mean(dim=1)
    return run.clean_prob, float(probabilities[0]), probabilities[1:].numpy()
