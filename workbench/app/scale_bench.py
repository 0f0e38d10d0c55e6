"""``workbench bench scale``: the workbench's costs on models of real sizes, built from their
configurations with random weights (no hub is needed), on the device and in the dtype asked for.

For each size, in one run on one device:

- ``trace``: ``trace_bench.bench_tracing`` on the edit case whose prompt is closest to
  ``TRACE_TOKENS`` (12) tokens long: one residual grid batched against
  ``transformer_lens.patching`` on the same device (``speedup_vs_patching``), and a whole trace
  (every layer x token, three kinds, ``TraceConfig``'s noise samples) against plain forward passes
  of as many rows;
- ``key_statistics_s``: ROME's key statistics (E[k k^T]) of one layer over ``KEY_TOKENS`` tokens of
  the default world's corpus (``CORPUS_ROUNDS`` rounds of it, enough for them);
- ``rome_edit_s``: one ROME edit at that layer with the statistics in hand (median of the cases);
- ``mend_edit_s``: one MEND edit by an untrained editor of the default MEND configuration, its
  input statistics taken from one edit's gradients (the time of an edit does not depend on the
  editor's training);
- ``eval_cases_per_s``: ROME edits evaluated per second (each case measured before and after).

Random weights make the edits' results meaningless; only the times are measured. Sizes are named
in ``SIZES``; the ``tiny-*`` sizes let the benchmark run on a CPU in seconds (the tests run them).
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, PretrainedConfig

from workbench.app.trace_bench import bench_tracing
from workbench.core.cases import EditCase, parse_cases
from workbench.editing.hparams import MendHparams, RomeHparams
from workbench.editing.key_stats import compute_key_second_moment
from workbench.editing.mend import compute_mend_edit, edit_gradients, edited_sites, new_network
from workbench.editing.rome import compute_rome_edit
from workbench.evaluation.runner import evaluate
from workbench.model.loading import check_device, dtype_name, dtype_named
from workbench.model.precision import cpu_name
from workbench.model.store import ensure_model
from workbench.model.tokens import encode_prompt
from workbench.world import World, export_edit_cases
from workbench.world.corpus import CorpusConfig, corpus_rounds

KEY_TOKENS = 100_000
CORPUS_ROUNDS = 4  # about 160,000 tokens of the default world's corpus
TRACE_TOKENS = 12

SIZES: dict[str, PretrainedConfig] = {
    "gpt2-xl": GPT2Config(n_layer=48, n_embd=1600, n_head=25, n_positions=1024, vocab_size=50257),
    "llama-7b": LlamaConfig(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                            intermediate_size=11008, max_position_embeddings=4096, vocab_size=32000),
    "tiny-gpt2": GPT2Config(n_layer=4, n_embd=64, n_head=4, n_positions=256, vocab_size=50257),
    "tiny-llama": LlamaConfig(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                              intermediate_size=128, max_position_embeddings=256, vocab_size=32000),
}


def random_model(config: PretrainedConfig, device: torch.device, dtype: torch.dtype, directory: Path):
    """A TransformerBridge of ``config`` with random weights made on ``device`` in ``dtype``, with
    the default model's tokenizer (its ids fall inside any of ``SIZES``' vocabularies)."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_model("default", progress=False))
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    with torch.device(device):
        hf_model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    bridge = TransformerBridge.boot_transformers(str(directory), hf_model=hf_model, tokenizer=tokenizer,
                                                 device=device, dtype=dtype)
    bridge.eval()
    return bridge


def bench_scale(sizes: Sequence[str], cases: Sequence[EditCase], world: World, device: str = "cuda",
                dtype: str = "bf16", repeats: int = 1, key_tokens: int = KEY_TOKENS) -> dict:
    """Every measurement of the module docstring for each of ``sizes`` (keys of ``SIZES``): ROME,
    MEND and the evaluation on ``cases`` (edit cases of ``world``, whose corpus feeds the key
    statistics over ``key_tokens`` tokens), the trace on the world's test case closest to
    ``TRACE_TOKENS`` tokens."""
    unknown = [size for size in sizes if size not in SIZES]
    if unknown or not sizes:
        raise ValueError(f"unknown sizes {unknown}; choose from {sorted(SIZES)}")
    if not cases:
        raise ValueError("bench scale needs at least one edit case")
    chosen_device, chosen_dtype = check_device(device), dtype_named(dtype)
    accelerator = torch.cuda.get_device_name(chosen_device) if chosen_device.type == "cuda" else cpu_name()
    texts = [text for texts in itertools.islice(corpus_rounds(world, CorpusConfig(), set()), CORPUS_ROUNDS)
             for text in texts]
    traceable = parse_cases(export_edit_cases(world, "test"), "the world's test split")
    results = {"device": str(chosen_device), "accelerator": accelerator, "dtype": dtype_name(chosen_dtype),
               "n_cases": len(cases), "key_tokens": key_tokens, "sizes": {}}
    for size in sizes:
        with tempfile.TemporaryDirectory() as directory:
            model = random_model(SIZES[size], chosen_device, chosen_dtype, Path(directory))
            results["sizes"][size] = _measure(model, cases, trace_case(model, traceable), texts, repeats, key_tokens)
            del model
        if chosen_device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _timed(function) -> tuple[float, object]:
    _synchronize()
    started = time.perf_counter()
    value = function()
    _synchronize()
    return time.perf_counter() - started, value


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def trace_case(model, cases: Sequence[EditCase]) -> EditCase:
    """The case whose prompt's token count is closest to ``TRACE_TOKENS``."""
    return min(cases, key=lambda case: abs(len(encode_prompt(model.tokenizer, case.request.prompt)) - TRACE_TOKENS))


def _measure(model, cases: Sequence[EditCase], traced: EditCase, texts: list[str], repeats: int,
             key_tokens: int) -> dict:
    cfg, request = model.cfg, traced.request
    row = {"layers": cfg.n_layers, "d_model": cfg.d_model, "d_mlp": cfg.d_mlp,
           "parameters": sum(p.numel() for p in model.original_model.parameters()),
           "prompt_tokens": len(encode_prompt(model.tokenizer, request.prompt))}
    row["trace"] = bench_tracing(model, request.prompt, request.subject, request.ground_truth, repeats=repeats)
    rome = dataclasses.replace(RomeHparams(), layer=cfg.n_layers // 4, key_stats_tokens=key_tokens)
    row["key_statistics_s"], moment = _timed(lambda: compute_key_second_moment(model, rome.layer, texts, key_tokens,
                                                                               progress=False))
    row["rome_edit_s"] = statistics.median(
        _timed(lambda c=case: compute_rome_edit(model, c.request, rome, texts, moment=moment))[0] for case in cases)
    mend = MendHparams()
    network = new_network(model, mend)
    for site, (keys, grads) in enumerate(edit_gradients(model, request, edited_sites(model, mend))):
        network.observe(site, keys, grads)  # the input statistics an untrained editor lacks
    row["mend_edit_s"] = statistics.median(
        _timed(lambda c=case: compute_mend_edit(model, c.request, mend, network))[0] for case in cases)
    seconds, _ = _timed(lambda: evaluate(model, cases, lambda c: compute_rome_edit(model, c.request, rome, texts,
                                                                                  moment=moment),
                                         progress=False, fluency_tokens=0))
    row["eval_cases_per_s"] = len(cases) / seconds
    return row
