"""Benchmark of batched causal tracing, both sides of each ratio measured in one process.

- ``speedup_vs_patching``: the residual grid of one fact (one noise sample) by the batched restore
  routine vs ``transformer_lens.patching.get_act_patch_resid_pre`` (one forward pass per cell) on
  the same corrupted/clean pair. Restoring ``resid_post`` of layer l is restoring ``resid_pre`` of
  layer l + 1, so the two grids are also compared (``max_abs_difference``).
- ``throughput_vs_forward``: rows of a whole ``trace_fact`` (every kind, every cell, every noise
  sample; clean run included) per second, vs plain forward passes of as many rows in the same
  batch sizes. Cells known without a forward pass are not run, so this can exceed 1.
"""

from __future__ import annotations

import time

import torch
from transformer_lens import patching

from workbench.core.sites import EMBED_HOOK
from workbench.model.tokens import encode_prompt, encode_target, subject_token_span
from workbench.tracing.trace import (
    TraceConfig,
    corruption_hook,
    embedding_noise,
    row_budget,
    trace_fact,
)


def _best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


@torch.no_grad()
def bench_tracing(model, prompt: str, subject: str, answer: str, config: TraceConfig | None = None,
                  repeats: int = 3, seed: int = 0) -> dict:
    config = config or TraceConfig()
    tokenizer = model.tokenizer
    tokens = torch.tensor(encode_prompt(tokenizer, prompt), device=model.W_E.device)
    span = subject_token_span(tokenizer, prompt, subject)
    answer_token = encode_target(tokenizer, answer)[0]
    n_layers, n_tokens = model.cfg.n_layers, tokens.shape[0]
    noise, _ = embedding_noise(model, config.samples, span[1] - span[0], config.noise_scale,
                               torch.Generator().manual_seed(seed))

    # 1. residual grid, one noise sample: batched vs TransformerLens' per-cell patching
    resid_config = TraceConfig(samples=1, noise_scale=config.noise_scale, kinds=("resid",),
                               row_budget=config.row_budget)

    def batched_grid():
        return trace_fact(model, prompt, subject, answer, resid_config, torch.Generator().manual_seed(seed))

    batched_seconds = _best_time(batched_grid, repeats)
    grid = torch.from_numpy(batched_grid().grids["resid"])
    _, full_cache = model.run_with_cache(tokens.unsqueeze(0))
    model.add_hook(EMBED_HOOK, corruption_hook(noise[:1], span), is_permanent=True)
    try:
        started = time.perf_counter()
        reference = patching.get_act_patch_resid_pre(
            model, tokens.unsqueeze(0), full_cache, lambda logits: logits[0, -1].softmax(-1)[answer_token])
        patching_seconds = time.perf_counter() - started
    finally:
        model.reset_hooks(including_permanent=True)
    difference = (grid[:, :-1] - reference[1:].T.cpu()).abs().max().item()

    # 2. a whole trace (every kind, cell and noise sample) vs plain forward passes of as many rows
    rows = len(config.kinds) * n_tokens * n_layers * config.samples
    generator = torch.Generator()

    budget = row_budget(model, config, tokens)

    def plain_rows():
        for begin in range(0, rows, budget):
            model(tokens.unsqueeze(0).expand(min(budget, rows - begin), -1))

    trace_seconds = _best_time(lambda: trace_fact(model, prompt, subject, answer, config,
                                                  generator.manual_seed(seed)), repeats)
    forward_seconds = _best_time(plain_rows, repeats)
    return {
        "prompt": prompt, "tokens": n_tokens, "layers": n_layers,
        "resid_cells": n_tokens * n_layers,
        "batched_resid_grid_s": batched_seconds, "patching_resid_grid_s": patching_seconds,
        "speedup_vs_patching": patching_seconds / batched_seconds,
        "max_abs_difference": difference,
        "trace_rows": rows, "trace_rows_s": trace_seconds, "plain_forward_rows_s": forward_seconds,
        "trace_rows_per_s": rows / trace_seconds, "plain_forward_rows_per_s": rows / forward_seconds,
        "throughput_vs_forward": forward_seconds / trace_seconds,
    }
