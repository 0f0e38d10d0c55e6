"""Where an edit goes (``EditSite``) and the hook names of the TransformerLens bridge.

A site names one projection weight of one layer by its path inside the Hugging Face model the
bridge wraps, how that weight is laid out (``"in out"``: GPT-2's ``Conv1D``, ``[d_in, d_out]``;
``"out in"``: ``nn.Linear``, ``[d_out, d_in]``) and the hook points that read the projection's
input (its key) and its output. Which module an architecture uses is data in
``workbench.model.architecture``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EMBED_HOOK = "hook_embed"
KEY_HOOK = "blocks.{layer}.mlp.hook_post"
OUTPUT_HOOK = "blocks.{layer}.hook_mlp_out"
INPUT_HOOKS = {"in": "blocks.{layer}.mlp.in.hook_{end}", "gate": "blocks.{layer}.mlp.gate.hook_{end}"}
STREAM_HOOKS = {"resid": "blocks.{layer}.hook_resid_post", "mlp": OUTPUT_HOOK,
                "attn": "blocks.{layer}.hook_attn_out"}


def stream_hook(kind: str, layer: int) -> str:
    """The hook point of ``kind`` (``"resid"``: the block's output, ``"mlp"``, ``"attn"``) at ``layer``."""
    return STREAM_HOOKS[kind].format(layer=layer)


@dataclass(frozen=True)
class EditSite:
    """Where an edit goes: one MLP projection weight of one layer, how it is laid out, and the hooks
    that read its key (input) and its output."""

    layer: int
    module: str
    orientation: str
    key_hook: str
    output_hook: str


def hf_model_of(bridge) -> torch.nn.Module:
    """The Hugging Face model a TransformerBridge wraps (shares its weights)."""
    return bridge.original_model


def site_module(bridge, site: EditSite) -> torch.nn.Module:
    """The module whose ``weight`` (and ``bias``, if any) the site names."""
    return hf_model_of(bridge).get_submodule(site.module)


def attention_scores_hook(layer: int) -> str:
    """The hook point of ``layer``'s attention scores, before the softmax: ``[batch head query key]``."""
    return f"blocks.{layer}.attn.hook_attn_scores"
