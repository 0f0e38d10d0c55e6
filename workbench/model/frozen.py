"""Optimise something outside a model without computing a single gradient for its weights.

Editing methods optimise tensors of their own (ROME's value vector, FT's weight change, MEND's
probes) through a frozen model. Autograd would still record and compute a gradient for every
weight that requires one, spending time and memory and leaving ``.grad`` on the model's
parameters. Inside ``frozen_weights(model)`` no parameter requires a gradient; on exit each one's
own flag is restored, also after an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def frozen_weights(model: torch.nn.Module) -> Iterator[None]:
    """No parameter of ``model`` requires a gradient within the block (see the module docstring)."""
    parameters = list({id(parameter): parameter for parameter in model.parameters()}.values())
    flags = [parameter.requires_grad for parameter in parameters]
    try:
        for parameter in parameters:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in zip(parameters, flags):
            parameter.requires_grad_(flag)
