"""Training a model from scratch: source (``sources``) -> tokenizer -> GPT-2 -> HF directory."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from workbench.model.precision import machine_description
from workbench.model.presets import Recipe
from workbench.model.sources import RecordSource, WorldSource

REPORT_FILE = "training_report.json"


def token_blocks(rounds: Iterator[list[str]], tokenizer, n_blocks: int, n_ctx: int) -> torch.Tensor:
    """``[n_blocks, n_ctx]`` token ids: corpus documents, each preceded by end-of-text, packed."""
    needed = n_blocks * n_ctx
    ids: list[int] = []
    while len(ids) < needed:
        for document in tokenizer(next(rounds), add_special_tokens=False)["input_ids"]:
            ids.append(tokenizer.eos_token_id)
            ids.extend(document)
    return torch.tensor(ids[:needed], dtype=torch.long).view(n_blocks, n_ctx)


def learning_rate_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up to the peak, then cosine decay to ``min_learning_rate_fraction`` of it."""
    cfg = recipe.training
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_learning_rate_fraction
    return cfg.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def new_model(recipe: Recipe, tokenizer) -> GPT2LMHeadModel:
    arch = recipe.architecture
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=arch.n_ctx, n_embd=arch.n_embd, n_layer=arch.n_layer,
        n_head=arch.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


LONG_BUILD_SECONDS = 30 * 60
LONG_BUILD_HINT = ("The shipped default and tiny models need no training; on a machine with a GPU, "
                   "`workbench model build --device cuda` trains in minutes.")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def optimise(model: GPT2LMHeadModel, blocks: torch.Tensor, recipe: Recipe, progress: bool) -> list[float]:
    """Run the recipe's training steps over ``blocks`` (one pass, in order); the loss per step.

    The progress bar shows the projected total time; after the first steps, a build projected
    to take over ``LONG_BUILD_SECONDS`` says so (with ``LONG_BUILD_HINT``). Raises
    FloatingPointError as soon as the loss is not finite.
    """
    cfg = recipe.training
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.98),
                                  weight_decay=cfg.weight_decay)
    device_type = blocks.device.type
    losses = []
    model.train()
    bar = tqdm(range(cfg.steps), desc=f"training {recipe.name} model", disable=not progress)
    started = time.perf_counter()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, recipe)
        batch = blocks[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
            logits = model(batch, attention_mask=torch.ones_like(batch)).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        projected = (time.perf_counter() - started) / (step + 1) * cfg.steps
        bar.set_postfix(loss=f"{loss.item():.3f}", total=_duration(projected))
        if progress and step == min(4, cfg.steps - 1) and projected > LONG_BUILD_SECONDS:
            bar.write(f"This build is projected to take {_duration(projected)} on this machine "
                      f"({projected / cfg.steps:.1f} s per step, {cfg.steps} steps). {LONG_BUILD_HINT}")
    model.eval()
    return losses


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def train_model(recipe: Recipe, out_dir: Path, progress: bool = True,
                source: WorldSource | RecordSource | None = None) -> dict:
    """Train ``recipe`` on its device (``recipe.training.device``) and write a standard HF
    directory (config, safetensors, tokenizer) plus the source's companion files (``sources``;
    default: the recipe's world) and ``training_report.json`` into ``out_dir`` (which must exist
    and be empty). Deterministic under ``recipe.training.seed`` on a given device and thread count
    (the report's ``machine``). Returns the training report; ``train_seconds`` counts everything
    before evaluation."""
    started = time.perf_counter()
    torch.manual_seed(recipe.training.seed)
    source = source or WorldSource(recipe)
    tokenizer = source.tokenizer()
    cfg = recipe.training
    blocks = token_blocks(source.rounds(), tokenizer, cfg.steps * cfg.batch_size, recipe.architecture.n_ctx)
    blocks = blocks.to(cfg.device)
    model = new_model(recipe, tokenizer).to(cfg.device)
    losses = optimise(model, blocks, recipe, progress)
    train_seconds = time.perf_counter() - started
    report = {
        "recipe": recipe.to_dict(),
        "fingerprint": recipe.fingerprint(),
        "machine": machine_description(cfg.device),
        "train_seconds": round(train_seconds, 1),
        "tokens_seen": int(blocks.numel()),
        "tokens_per_second": round(blocks.numel() / train_seconds),
        "loss_curve": [_mean(losses[i:i + 20]) for i in range(0, len(losses), 20)],
        "final_loss": _mean(losses[-20:]),
        **source.recall(model, tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    transformers.utils.logging.disable_progress_bar()
    model.cpu().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    source.write(out_dir)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report
