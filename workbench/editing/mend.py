"""MEND (Mitchell et al. 2022): a learned editor that turns the fine-tuning gradient of an edit into
a weight change, in one forward and one backward pass of the model.

For a projection weight ``W`` in key space (``[d_in, d_out]``: output = key @ W), the gradient of
the edit loss is ``sum_t outer(k_t, d_t)`` over the edit sequence's tokens, with ``k_t`` the
weight's key (input) and ``d_t`` the gradient of the loss at its output. MEND passes each pair
through a small network and sums the transformed outer products instead:

1. ``u_t = [k_t, d_t]`` is standardised per dimension with running statistics of the training
   pairs of that weight (frozen after training);
2. ``u_t`` goes through the editor of the weight's shape (one per shape, shared by the weights of
   that shape, with a scale ``s_w`` and shift ``o_w`` per weight), made of residual blocks:

   - ``"bottleneck"``: one block ``u + B relu(s_w * (A u + b) + o_w)`` with ``A``: ``rank`` x
     width, ``B`` starting at zero;
   - ``"reference"`` (the authors' ``IDMLP`` of two ``LRLinear``): two blocks
     ``u + relu(s_w * (U V u + b) + o_w)`` at full width, ``V``: ``min(rank, width)`` x width drawn
     from a standard normal, ``U`` starting at zero, scale and shift at full width; the ``relu``
     passes a gradient of 1 at 0 (the authors' ``clamp``), else ``U`` would never learn;

   so both editors start as the identity;
3. the output splits into ``(k~_t, d~_t)`` and the change is ``dW_w = -a_w sum_t outer(k~_t, d~_t)``
   with a learned step size ``a_w`` per weight.

The weights edited are the MLP output projections of ``MendHparams.layers`` and, with ``"in"`` in
``matrices``, their input projections (the authors edit both MLP matrices of the last three layers).
``dW_w`` is kept as its factors (``WeightDelta`` of rank at most the sequence length) and applied
through the same hooks as every edit. The editor is trained by ``mend_training.train_mend`` and
saved as ``mend.safetensors`` with ``mend.json`` (hyperparameters, the model's weight fingerprint,
the training report); ``load_mend`` finds it again by that fingerprint.

What still differs from the authors' code with the ``"reference"`` editor:

- the step sizes are ``exp`` of a learned log (always a descent step); the authors' are raw
  parameters starting at ``+1e-4``, added as ``W + a * g``, so their sign is learned too (their own
  Adam, at ``1e-4``);
- the standardisation divides by ``max(std, 1e-8)``, the authors' by ``std + 1e-7``; its
  statistics are a per-weight running mean and variance in double precision;
- one outer step averages ``batch_size`` edits; the authors' accumulates 10 edit batches;
- training stops after ``train_steps`` and keeps the best of the validations every
  ``validation_every`` steps; the authors' stops after 20,000 iterations without improvement;
- the training edits are the world's facts (or a case file's train records), not zsRE's questions
  or Wikitext continuations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from workbench.core.edit import Edit, EditRequest, WeightDelta
from workbench.core.fingerprint import model_fingerprint, texts_fingerprint
from workbench.core.io import staged_directory
from workbench.core.paths import cache_root, shipped_root
from workbench.core.sites import EditSite, site_module
from workbench.editing.hparams import MendHparams
from workbench.editing.method import EditingMethod, Resources
from workbench.editing.target_loss import target_batch
from workbench.model.architecture import mlp_input_sites, mlp_output_site
from workbench.model.frozen import frozen_weights

WEIGHTS_FILE = "mend.safetensors"
CONFIG_FILE = "mend.json"
FORMAT_VERSION = 2
TRAIN_COMMAND = "workbench mend train"


def edited_sites(model, hparams: MendHparams) -> list[EditSite]:
    """The sites of ``hparams.matrices`` in ``hparams.layers`` (negative numbers count from the last
    layer), layer by layer, input projections first."""
    n_layers = model.cfg.n_layers
    sites = []
    for layer in (layer + n_layers if layer < 0 else layer for layer in hparams.layers):
        if "in" in hparams.matrices:
            sites += mlp_input_sites(model, layer)
        if "out" in hparams.matrices:
            sites.append(mlp_output_site(model, layer))
    return sites


def site_shape(model, site: EditSite) -> tuple[int, int]:
    """``(d_in, d_out)`` of the site's weight."""
    rows, columns = site_module(model, site).weight.shape
    return (rows, columns) if site.orientation == "in out" else (columns, rows)


class BottleneckBlock(nn.Module):
    """``u + B relu(s_w * (A u + b) + o_w)`` with ``A [rank, width]``, ``B [width, rank]`` (zero at start)."""

    def __init__(self, width: int, rank: int, n_weights: int):
        super().__init__()
        self.down = nn.Linear(width, rank)
        self.up = nn.Linear(rank, width, bias=False)
        nn.init.zeros_(self.up.weight)
        self.scale = nn.Parameter(torch.ones(n_weights, rank))
        self.shift = nn.Parameter(torch.zeros(n_weights, rank))

    def forward(self, u: Tensor, weight: int) -> Tensor:
        return u + self.up(torch.relu(self.scale[weight] * self.down(u) + self.shift[weight]))


class LowRankBlock(nn.Module):
    """``u + relu(s_w * (U V u + b) + o_w)`` at full width, ``V [r, width]`` standard normal and
    ``U [width, r]`` zero at start, ``r = min(rank, width)`` (the authors' ``LRLinear``)."""

    def __init__(self, width: int, rank: int, n_weights: int):
        super().__init__()
        inner = min(rank, width)
        self.u = nn.Parameter(torch.zeros(width, inner))
        self.v = nn.Parameter(torch.randn(inner, width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.scale = nn.Parameter(torch.ones(n_weights, width))
        self.shift = nn.Parameter(torch.zeros(n_weights, width))

    def forward(self, u: Tensor, weight: int) -> Tensor:
        # clamp, not relu: at the start every pre-activation is exactly 0, where relu's gradient is 0
        # and clamp's is 1; with relu the zero-initialised U would never receive a gradient
        return u + (self.scale[weight] * ((u @ self.v.T) @ self.u.T + self.bias) + self.shift[weight]).clamp(min=0)


EDITOR_BLOCKS = {"bottleneck": (BottleneckBlock, 1), "reference": (LowRankBlock, 2)}


class MendNetwork(nn.Module):
    """The editor networks of the module docstring for weights of key-space shapes ``shapes``
    (``(d_in, d_out)`` each, all of the same ``d_in + d_out``): one editor per distinct shape."""

    def __init__(self, shapes: Sequence[tuple[int, int]], editor: str, rank: int, step_size: float):
        super().__init__()
        widths = {d_in + d_out for d_in, d_out in shapes}
        if len(widths) != 1:
            raise ValueError(f"MEND's edited weights must share d_in + d_out, not {list(shapes)}")
        width = widths.pop()
        self.shapes = [tuple(shape) for shape in shapes]
        distinct = list(dict.fromkeys(self.shapes))
        self.editor_of = [distinct.index(shape) for shape in self.shapes]
        self.index_in_editor = [self.shapes[:site].count(shape) for site, shape in enumerate(self.shapes)]
        block, n_blocks = EDITOR_BLOCKS[editor]
        self.editors = nn.ModuleList(
            nn.ModuleList(block(width, rank, self.shapes.count(shape)) for _ in range(n_blocks)) for shape in distinct)
        self.log_step_size = nn.Parameter(torch.full((len(shapes),), float(torch.tensor(step_size).log())))
        self.register_buffer("count", torch.zeros(len(shapes), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(len(shapes), width, dtype=torch.float64))
        self.register_buffer("sum_squares", torch.zeros(len(shapes), width, dtype=torch.float64))

    @torch.no_grad()
    def observe(self, site: int, keys: Tensor, grads: Tensor) -> None:
        """Fold a batch of pairs into the running mean and variance of ``site`` (Chan et al.)."""
        batch = torch.cat([keys, grads], dim=-1).double()
        n, count = batch.shape[0], self.count[site]
        batch_mean = batch.mean(0)
        shift = batch_mean - self.mean[site]
        total = count + n
        self.mean[site] += shift * n / total
        self.sum_squares[site] += ((batch - batch_mean) ** 2).sum(0) + shift ** 2 * count * n / total
        self.count[site] = total

    def forward(self, site: int, keys: Tensor, grads: Tensor) -> tuple[Tensor, Tensor]:
        """``(k~ [T, d_in], d~ [T, d_out])`` from the pairs ``keys [T, d_in]``, ``grads [T, d_out]``."""
        if self.count[site] < 2:
            raise ValueError("the MEND editor has no input statistics yet: it has not been trained")
        std = (self.sum_squares[site] / (self.count[site] - 1)).sqrt().clamp(min=1e-8)
        u = ((torch.cat([keys, grads], dim=-1).double() - self.mean[site]) / std).float()
        for block in self.editors[self.editor_of[site]]:
            u = block(u, self.index_in_editor[site])
        d_in = self.shapes[site][0]
        return u[:, :d_in], u[:, d_in:]

    def weight_change(self, site: int, keys: Tensor, grads: Tensor) -> tuple[Tensor, Tensor]:
        """``dW = left @ right`` (``[d_in, T]`` and ``[T, d_out]``) for one site."""
        key_edit, grad_edit = self(site, keys, grads)
        return key_edit.T, -self.log_step_size[site].exp() * grad_edit


def edit_gradients(model, request: EditRequest, sites: list[EditSite]) -> list[tuple[Tensor, Tensor]]:
    """Per site, the keys ``[T, d_in]`` and the gradients at the site's output ``[T, d_out]`` of the
    mean NLL of ``target_new`` after the prompt, over the ``T`` tokens of prompt + target (less its
    last token). No gradient is computed for the model's parameters."""
    batch = target_batch(model.tokenizer, [request.prompt], request.target_new, model.W_E.device)
    keys: dict[int, Tensor] = {}
    probes: dict[int, Tensor] = {}
    hooks = []
    for index, site in enumerate(sites):

        def read_key(key, hook, index=index):
            keys[index] = key[0].detach()
            return key

        def add_probe(output, hook, index=index):
            probes[index] = torch.zeros_like(output[0], requires_grad=True)
            return output + probes[index]

        hooks += [(site.key_hook, read_key), (site.output_hook, add_probe)]
    with torch.enable_grad(), frozen_weights(model), model.hooks(fwd_hooks=hooks):
        nll = batch.nll(model(batch.tokens))
        if not torch.isfinite(nll):
            raise FloatingPointError(f"MEND's edit loss is {nll.item()} before any change")
        grads = torch.autograd.grad(nll, [probes[index] for index in range(len(sites))])
    return [(keys[index], grad) for index, grad in enumerate(grads)]


def mend_deltas(network: MendNetwork, sites: list[EditSite], pairs: list[tuple[Tensor, Tensor]]) -> list[WeightDelta]:
    """The editor's weight change at every site, as ``WeightDelta`` factors (differentiable)."""
    return [WeightDelta(site, *network.weight_change(index, keys, grads))
            for index, (site, (keys, grads)) in enumerate(zip(sites, pairs))]


def compute_mend_edit(model, request: EditRequest, hparams: MendHparams, network: MendNetwork) -> Edit:
    """The MEND edit of ``request`` by a trained ``network``."""
    started = time.perf_counter()
    sites = edited_sites(model, hparams)
    pairs = edit_gradients(model, request, sites)
    with torch.no_grad():
        deltas = mend_deltas(network, sites, pairs)
    for delta in deltas:
        if not (torch.isfinite(delta.left).all() and torch.isfinite(delta.right).all()):
            raise FloatingPointError("MEND's weight change is not finite")
    return Edit(request, tuple(deltas), method="mend", hparams=asdict(hparams),
                timings={"total_s": time.perf_counter() - started})


def new_network(model, hparams: MendHparams) -> MendNetwork:
    """An untrained editor for ``model``, initialised under ``hparams.seed`` (the global random
    state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hparams.seed)
        network = MendNetwork([site_shape(model, site) for site in edited_sites(model, hparams)], hparams.editor,
                              hparams.rank, hparams.step_size_init)
    return network.to(model.W_E.device)


def hparams_fingerprint(hparams: MendHparams) -> str:
    return texts_fingerprint([json.dumps(asdict(hparams), sort_keys=True)])


def default_checkpoint_dir(model, hparams: MendHparams, fingerprint: str | None = None) -> Path:
    """``cache_root()/mend/<model weight fingerprint>-<hyperparameter fingerprint>``."""
    return cache_root() / "mend" / f"{fingerprint or model_fingerprint(model)}-{hparams_fingerprint(hparams)}"


def found_checkpoint_dir(model, hparams: MendHparams, fingerprint: str) -> Path:
    """Where the editor for ``model`` and ``hparams`` is: in the user cache, else among the shipped
    editors (the default model's, ``shipped_root()/mend``); the cache's path when neither has it."""
    cached = default_checkpoint_dir(model, hparams, fingerprint)
    shipped = shipped_root() / "mend" / cached.name
    return next((directory for directory in (cached, shipped)
                 if (directory / CONFIG_FILE).is_file() and (directory / WEIGHTS_FILE).is_file()), cached)


def save_mend(network: MendNetwork, hparams: MendHparams, fingerprint: str, report: dict, directory: Path) -> Path:
    """Write ``mend.safetensors`` and ``mend.json`` into the new directory ``directory`` atomically
    (staged in a sibling, then renamed); an existing directory is refused."""
    with staged_directory(directory) as staging:
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()},
                  staging / WEIGHTS_FILE)
        config = {"format_version": FORMAT_VERSION, "model_fingerprint": fingerprint, "hparams": asdict(hparams),
                  "site_shapes": network.shapes,
                  "training": report}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return directory


def load_mend(model, hparams: MendHparams, directory: str | Path | None = None) -> MendNetwork:
    """The trained editor for ``model`` and ``hparams`` (default: found by the model's fingerprint,
    ``found_checkpoint_dir``); a missing, foreign or mismatched checkpoint is a clear error naming
    the fix."""
    fingerprint = model_fingerprint(model)
    directory = Path(directory) if directory else found_checkpoint_dir(model, hparams, fingerprint)
    fix = f"train one with `{TRAIN_COMMAND}` (with the same --model and --hparams)"
    if model.cfg.dtype != torch.float32:
        fix += (f"; an editor belongs to the exact weights it was trained for, and this model is loaded in "
                f"{model.cfg.dtype}: the editors of the shipped and cached fp32 models need --dtype fp32")
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise ValueError(f"no MEND editor for this model (weights {fingerprint}) at {directory}: {fix}")
    config = json.loads((directory / CONFIG_FILE).read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"the MEND editor at {directory} has format {config.get('format_version')}, "
                         f"this workbench reads {FORMAT_VERSION}: {fix}")
    if config["model_fingerprint"] != fingerprint:
        raise ValueError(f"the MEND editor at {directory} was trained for the model with weights "
                         f"{config['model_fingerprint']}, not this one ({fingerprint}): {fix}")
    if config["hparams"] != json.loads(json.dumps(asdict(hparams))):
        raise ValueError(f"the MEND editor at {directory} was trained with other hyperparameters "
                         f"({config['hparams']}): {fix}")
    network = new_network(model, hparams)
    network.load_state_dict(load_file(directory / WEIGHTS_FILE, device=str(model.W_E.device)))
    network.eval()
    return network


class Mend(EditingMethod):
    """MEND behind the method protocol: prepares the trained editor network (``load_mend``)."""

    name = "mend"
    hparams_class = MendHparams

    def prepare(self, model, hparams: MendHparams, resources: Resources) -> MendNetwork:
        return load_mend(model, hparams, resources.checkpoint)

    def compute(self, model, request: EditRequest, hparams: MendHparams, prepared: MendNetwork) -> Edit:
        return compute_mend_edit(model, request, hparams, prepared)

    def edited_layers(self, hparams: MendHparams, n_layers: int) -> str:
        return ",".join(str(layer % n_layers) for layer in hparams.layers)
