"""Where each architecture keeps its MLP projections, as data.

The table is keyed by the Hugging Face ``config.model_type``. ``output`` is the path of the MLP
output projection inside the HF model (``{layer}`` filled in), ``inputs`` the paths of its input
projections (one, or a gate and an up projection in a gated MLP); ``orientation`` says how their
weights are laid out:

- ``"in out"``: GPT-2's ``Conv1D``, weight ``[d_in, d_out]``, output = key @ W + b;
- ``"out in"``: ``nn.Linear``, weight ``[d_out, d_in]``, output = W @ key + b.

A site's key is the projection's input and its output the projection's output. For the MLP output
projection (``d_in = d_mlp``, ``d_out = d_model``) they are read at TransformerLens'
``blocks.{layer}.mlp.hook_post`` and ``blocks.{layer}.hook_mlp_out``; for an input projection
(``d_in = d_model``, ``d_out = d_mlp``) at the bridge's ``blocks.{layer}.mlp.in.hook_in`` and
``hook_out`` (``mlp.gate`` for the gate projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

from workbench.core.sites import INPUT_HOOKS, KEY_HOOK, OUTPUT_HOOK, EditSite, hf_model_of


@dataclass(frozen=True)
class MlpLayout:
    output: str
    inputs: dict[str, str]
    orientation: str


ARCHITECTURES: dict[str, MlpLayout] = {
    "gpt2": MlpLayout("transformer.h.{layer}.mlp.c_proj", {"in": "transformer.h.{layer}.mlp.c_fc"}, "in out"),
    "gptj": MlpLayout("transformer.h.{layer}.mlp.fc_out", {"in": "transformer.h.{layer}.mlp.fc_in"}, "out in"),
    "gpt_neox": MlpLayout("gpt_neox.layers.{layer}.mlp.dense_4h_to_h",
                          {"in": "gpt_neox.layers.{layer}.mlp.dense_h_to_4h"}, "out in"),
    "llama": MlpLayout("model.layers.{layer}.mlp.down_proj",
                       {"gate": "model.layers.{layer}.mlp.gate_proj", "in": "model.layers.{layer}.mlp.up_proj"},
                       "out in"),
}


def layout_for(model_type: str) -> MlpLayout:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(f"architecture {model_type!r} is not in the architecture map; "
                         f"supported: {sorted(ARCHITECTURES)}") from None


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


def _checked_layout(bridge, layer: int) -> MlpLayout:
    n_layers = bridge.cfg.n_layers
    if not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer must be an integer in [0, {n_layers}), got {layer!r}")
    return layout_for(hf_model_of(bridge).config.model_type)


def mlp_output_site(bridge, layer: int) -> EditSite:
    """The MLP output site of ``layer`` in ``bridge``; a clear error for a layer out of range."""
    layout = _checked_layout(bridge, layer)
    return EditSite(layer, layout.output.format(layer=layer), layout.orientation,
                    KEY_HOOK.format(layer=layer), OUTPUT_HOOK.format(layer=layer))


def mlp_input_sites(bridge, layer: int) -> list[EditSite]:
    """The MLP input projection sites of ``layer`` (the gate's first in a gated MLP)."""
    layout = _checked_layout(bridge, layer)
    return [EditSite(layer, module.format(layer=layer), layout.orientation,
                     INPUT_HOOKS[name].format(layer=layer, end="in"), INPUT_HOOKS[name].format(layer=layer, end="out"))
            for name, module in layout.inputs.items()]

