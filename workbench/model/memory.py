"""How many prompt rows one batched forward pass of a model may take, from the memory that is free.

A traced fact runs thousands of (restoration, noise sample) rows of the same prompt. The rows of
one pass are sized to use at most ``MEMORY_SHARE`` of the device's free memory: on a GPU the
free memory CUDA reports, on a CPU the available physical memory. A row's cost is estimated from
the model's shapes: per position, the logits (fp32), the residual stream of every layer (kept for
restoration hooks), the MLP hidden layer and the attention pattern, in the model's dtype. The
count is capped (``MAX_ROWS``): beyond it a pass is no faster per row.
"""

from __future__ import annotations

import os

import torch

MEMORY_SHARE = 0.5
MAX_ROWS = {"cpu": 512, "cuda": 4096}


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device`` in bytes (a CPU's: available physical memory)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def row_bytes(cfg, n_positions: int) -> int:
    """Estimated peak bytes of one row of ``n_positions`` tokens in a forward pass (module docstring)."""
    element = torch.tensor([], dtype=cfg.dtype).element_size()
    per_position = 4 * cfg.d_vocab + element * (3 * cfg.n_layers * cfg.d_model + 2 * cfg.d_mlp
                                                + cfg.n_heads * n_positions)
    return n_positions * per_position


def rows_that_fit(model, n_positions: int) -> int:
    """Rows of ``n_positions`` tokens that one forward pass of ``model`` may take (module docstring)."""
    device = model.W_E.device
    fitting = int(MEMORY_SHARE * free_bytes(device) // row_bytes(model.cfg, n_positions))
    return max(1, min(MAX_ROWS.get(device.type, MAX_ROWS["cpu"]), fitting))
