"""MEND (Mitchell et al. 2022): a learned editor that turns the fine-tuning gradient of an edit into
a weight change, in one forward and one backward pass of the model.

For an MLP output weight ``W`` (key space, ``[d_mlp, d_model]``: output = key @ W), the gradient of
the edit loss is ``sum_t outer(k_t, d_t)`` over the edit sequence's tokens, with ``k_t`` the layer's
key (input) and ``d_t`` the gradient of the loss at the layer's output. MEND passes each pair
through a small network and sums the transformed outer products instead:

1. ``u_t = [k_t, d_t]`` is standardised per dimension with running statistics of the training
   pairs of that layer (frozen after training);
2. ``u~_t = u_t + B relu(s_l * (A u_t + b) + o_l)``: one low-rank block (``A``: ``rank`` x
   ``d_mlp + d_model``), shared by every edited layer (they have the same shape), with a scale
   ``s_l`` and shift ``o_l`` per layer; ``B`` starts at zero, so the editor starts as the identity;
3. ``u~_t`` splits into ``(k~_t, d~_t)`` and the change is ``dW_l = -a_l sum_t outer(k~_t, d~_t)``
   with a learned step size ``a_l`` per layer.

``dW_l`` is kept as its factors (``WeightDelta`` of rank at most the sequence length) and applied
through the same hooks as every edit. The editor is trained by ``mend_training.train_mend`` and
saved as ``mend.safetensors`` with ``mend.json`` (hyperparameters, the model's weight fingerprint,
the training report); ``load_mend`` finds it again by that fingerprint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from workbench.editing.edit import Edit, EditRequest, WeightDelta
from workbench.editing.fingerprint import model_fingerprint, texts_fingerprint
from workbench.editing.hparams import MendHparams
from workbench.io import staged_directory
from workbench.model.architecture import EditSite, mlp_output_site
from workbench.model.frozen import frozen_weights
from workbench.model.store import cache_root
from workbench.model.tokens import encode_prompt, encode_target

WEIGHTS_FILE = "mend.safetensors"
CONFIG_FILE = "mend.json"
FORMAT_VERSION = 1
TRAIN_COMMAND = "workbench mend train"


def edited_sites(model, hparams: MendHparams) -> list[EditSite]:
    """The sites of ``hparams.layers`` (negative numbers count from the last layer)."""
    n_layers = model.cfg.n_layers
    layers = [layer + n_layers if layer < 0 else layer for layer in hparams.layers]
    return [mlp_output_site(model, layer) for layer in layers]


class MendNetwork(nn.Module):
    """The editor network of the module docstring, for ``n_sites`` layers of one shape."""

    def __init__(self, d_key: int, d_out: int, n_sites: int, rank: int, step_size: float):
        super().__init__()
        self.d_key = d_key
        width = d_key + d_out
        self.down = nn.Linear(width, rank)
        self.up = nn.Linear(rank, width, bias=False)
        nn.init.zeros_(self.up.weight)
        self.scale = nn.Parameter(torch.ones(n_sites, rank))
        self.shift = nn.Parameter(torch.zeros(n_sites, rank))
        self.log_step_size = nn.Parameter(torch.full((n_sites,), float(torch.tensor(step_size).log())))
        self.register_buffer("count", torch.zeros(n_sites, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_sites, width, dtype=torch.float64))
        self.register_buffer("sum_squares", torch.zeros(n_sites, width, dtype=torch.float64))

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
        """``(k~ [T, d_mlp], d~ [T, d_model])`` from the pairs ``keys [T, d_mlp]``, ``grads [T, d_model]``."""
        if self.count[site] < 2:
            raise ValueError("the MEND editor has no input statistics yet: it has not been trained")
        std = (self.sum_squares[site] / (self.count[site] - 1)).sqrt().clamp(min=1e-8)
        u = ((torch.cat([keys, grads], dim=-1).double() - self.mean[site]) / std).float()
        hidden = torch.relu(self.scale[site] * self.down(u) + self.shift[site])
        u = u + self.up(hidden)
        return u[:, :self.d_key], u[:, self.d_key:]

    def weight_change(self, site: int, keys: Tensor, grads: Tensor) -> tuple[Tensor, Tensor]:
        """``dW = left @ right`` (``[d_mlp, T]`` and ``[T, d_model]``) for one site."""
        key_edit, grad_edit = self(site, keys, grads)
        return key_edit.T, -self.log_step_size[site].exp() * grad_edit


def edit_gradients(model, request: EditRequest, sites: list[EditSite]) -> list[tuple[Tensor, Tensor]]:
    """Per site, the keys ``[T, d_mlp]`` and the gradients at the MLP output ``[T, d_model]`` of the
    mean NLL of ``target_new`` after the prompt, over the ``T`` tokens of prompt + target (less its
    last token). No gradient is computed for the model's parameters."""
    device = model.W_E.device
    prompt = encode_prompt(model.tokenizer, request.prompt)
    target = encode_target(model.tokenizer, request.target_new)
    tokens = torch.tensor([prompt + target[:-1]], device=device)
    positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(target), device=device)
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
        log_probs = model(tokens)[0].float().log_softmax(-1)
        nll = -log_probs[positions, torch.tensor(target, device=device)].mean()
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
        network = MendNetwork(model.cfg.d_mlp, model.cfg.d_model, len(hparams.layers), hparams.rank,
                              hparams.step_size_init)
    return network.to(model.W_E.device)


def hparams_fingerprint(hparams: MendHparams) -> str:
    return texts_fingerprint([json.dumps(asdict(hparams), sort_keys=True)])


def default_checkpoint_dir(model, hparams: MendHparams, fingerprint: str | None = None) -> Path:
    """``cache_root()/mend/<model weight fingerprint>-<hyperparameter fingerprint>``."""
    return cache_root() / "mend" / f"{fingerprint or model_fingerprint(model)}-{hparams_fingerprint(hparams)}"


def save_mend(network: MendNetwork, hparams: MendHparams, fingerprint: str, report: dict, directory: Path) -> Path:
    """Write ``mend.safetensors`` and ``mend.json`` into the new directory ``directory`` atomically
    (staged in a sibling, then renamed); an existing directory is refused."""
    with staged_directory(directory) as staging:
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()},
                  staging / WEIGHTS_FILE)
        config = {"format_version": FORMAT_VERSION, "model_fingerprint": fingerprint, "hparams": asdict(hparams),
                  "shape": {"d_key": network.d_key, "d_out": network.down.in_features - network.d_key},
                  "training": report}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return directory


def load_mend(model, hparams: MendHparams, directory: str | Path | None = None) -> MendNetwork:
    """The trained editor for ``model`` and ``hparams`` (default: found by the model's fingerprint in
    the cache); a missing, foreign or mismatched checkpoint is a clear error naming the fix."""
    fingerprint = model_fingerprint(model)
    directory = Path(directory) if directory else default_checkpoint_dir(model, hparams, fingerprint)
    fix = f"train one with `{TRAIN_COMMAND}` (with the same --model and --hparams)"
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
