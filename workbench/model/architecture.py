"""Where each architecture keeps its MLP output projection, as data.

The table is keyed by the Hugging Face ``config.model_type``. ``module`` is the path of the MLP
output projection inside the HF model (``{layer}`` filled in); ``orientation`` says how its
weight is laid out:

- ``"d_mlp d_model"``: GPT-2's ``Conv1D``, weight ``[d_mlp, d_model]``, output = key @ W + b;
- ``"d_model d_mlp"``: ``nn.Linear``, weight ``[d_model, d_mlp]``, output = W @ key + b.

The key (the input of that projection) is read at TransformerLens' ``blocks.{layer}.mlp.hook_post``
and the projection's output at ``blocks.{layer}.hook_mlp_out``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

KEY_HOOK = "blocks.{layer}.mlp.hook_post"
OUTPUT_HOOK = "blocks.{layer}.hook_mlp_out"


@dataclass(frozen=True)
class MlpOutputLayout:
    module: str
    orientation: str


ARCHITECTURES: dict[str, MlpOutputLayout] = {
    "gpt2": MlpOutputLayout("transformer.h.{layer}.mlp.c_proj", "d_mlp d_model"),
    "gptj": MlpOutputLayout("transformer.h.{layer}.mlp.fc_out", "d_model d_mlp"),
    "gpt_neox": MlpOutputLayout("gpt_neox.layers.{layer}.mlp.dense_4h_to_h", "d_model d_mlp"),
    "llama": MlpOutputLayout("model.layers.{layer}.mlp.down_proj", "d_model d_mlp"),
}


@dataclass(frozen=True)
class EditSite:
    """Where an edit goes: the MLP output weight of one layer, how it is laid out, and the hooks that
    read its key (input) and its output."""

    layer: int
    module: str
    orientation: str
    key_hook: str
    output_hook: str


def layout_for(model_type: str) -> MlpOutputLayout:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(f"architecture {model_type!r} is not in the architecture map; "
                         f"supported: {sorted(ARCHITECTURES)}") from None


def hf_model_of(bridge) -> torch.nn.Module:
    """The Hugging Face model a TransformerBridge wraps (shares its weights)."""
    return bridge.original_model


def plain_view(bridge) -> torch.nn.Module:
    """A plain Hugging Face model (eval mode) whose parameters and buffers are the bridge's own
    tensors, not copies: it runs as Hugging Face alone runs the model, without the bridge's
    components and hook points, and sees every weight the bridge has (committed edits included)
    but none of the hooks applied to the bridge. The bridge replaces its own HF model's modules
    with its components, so that model no longer runs as Hugging Face alone would."""
    wrapped = hf_model_of(bridge)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(wrapped.config)
    named = [*wrapped.named_parameters(remove_duplicate=False), *wrapped.named_buffers(remove_duplicate=False)]
    tensors = {name.replace("._original_component", ""): tensor for name, tensor in named}
    needed = [*plain.named_parameters(remove_duplicate=False), *plain.named_buffers(remove_duplicate=False)]
    missing = sorted({name for name, _ in needed} - set(tensors))
    if missing:
        raise ValueError(f"the bridge's tensors do not cover the plain model's {missing}")
    for name, _ in needed:
        owner, _, attribute = name.rpartition(".")
        module = plain.get_submodule(owner)
        slots = module._parameters if attribute in module._parameters else module._buffers
        slots[attribute] = tensors[name]
    return plain.eval()


def mlp_output_site(bridge, layer: int) -> EditSite:
    """The MLP output site of ``layer`` in ``bridge``; a clear error for a layer out of range."""
    n_layers = bridge.cfg.n_layers
    if not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer must be an integer in [0, {n_layers}), got {layer!r}")
    layout = layout_for(hf_model_of(bridge).config.model_type)
    return EditSite(layer, layout.module.format(layer=layer), layout.orientation,
                         KEY_HOOK.format(layer=layer), OUTPUT_HOOK.format(layer=layer))


def mlp_output_module(bridge, site: EditSite) -> torch.nn.Module:
    """The module whose ``weight`` (and ``bias``, if any) the site names."""
    return hf_model_of(bridge).get_submodule(site.module)
