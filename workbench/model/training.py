"""Training a model from scratch: source (``sources``) -> tokenizer -> GPT-2 -> HF directory.

Training runs in stages, each one pass over its own blocks with its own warm-up and cosine decay,
and one AdamW state throughout: an optional enrichment stage (``enrichment_steps`` of directory
lines alone, ``workbench.world.corpus.directory_rounds``), then the corpus stage (``steps``; its
blocks generated once and passed over ``corpus_passes`` times).
During the first ``late_mlp_slow_steps`` of the corpus stage, the MLPs of the last
``late_mlp_layers`` blocks and the final layer norm learn at ``late_mlp_lr_fraction`` of the
rate. The intent: the attributes learnt there in the enrichment stage should be read from the
subject's position rather than looked up again at the prompt's last token (measured in
``docs/specimen.md``, fourth round: the last token gathers the name's parts and applies the same
MLPs itself). The unembedding is tied to the embedding, which the corpus stage needs for its new
relation words, so it is not slowed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from workbench.model.precision import machine_description
from workbench.model.presets import Recipe, TrainingConfig
from workbench.model.sources import RecordSource, WorldSource
from workbench.world import directory_rounds

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


def learning_rate_at(step: int, n_steps: int, cfg: TrainingConfig) -> float:
    """At ``step`` of a stage of ``n_steps``: linear warm-up to the peak, then cosine decay to
    ``min_learning_rate_fraction`` of it."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, n_steps - cfg.warmup_steps)
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


@dataclass(frozen=True)
class Stage:
    """A stage of training: ``blocks`` ``[steps * batch_size, n_ctx]`` taken in order, a batch per
    step; the late MLPs learn slowly for its first ``slow_steps`` (see the module docstring)."""

    name: str
    blocks: torch.Tensor
    slow_steps: int = 0


def late_mlp_parameters(model: GPT2LMHeadModel, n_layers: int) -> list[torch.nn.Parameter]:
    """The parameters of the MLPs of the last ``n_layers`` blocks and of the final layer norm."""
    blocks = model.transformer.h
    if not 0 < n_layers <= len(blocks):
        raise ValueError(f"late_mlp_layers must be between 1 and the model's {len(blocks)} layers, got {n_layers}")
    modules = [block.mlp for block in blocks[len(blocks) - n_layers:]] + [model.transformer.ln_f]
    return [parameter for module in modules for parameter in module.parameters()]


def parameter_groups(model: GPT2LMHeadModel, cfg: TrainingConfig) -> list[dict]:
    """AdamW's groups: every parameter, or with ``late_mlp_layers`` the late MLPs apart (``"slow"``)."""
    if not cfg.late_mlp_layers:
        return [{"params": list(model.parameters()), "slow": False}]
    late = {id(parameter) for parameter in late_mlp_parameters(model, cfg.late_mlp_layers)}
    parameters = list(model.parameters())
    return [{"params": [p for p in parameters if id(p) not in late], "slow": False},
            {"params": [p for p in parameters if id(p) in late], "slow": True}]


def optimise(model: GPT2LMHeadModel, stages: list[Stage], recipe: Recipe, progress: bool) -> list[float]:
    """Run the recipe's training stages in order (see the module docstring); the loss per step.

    The progress bar shows the projected total time; after the first steps, a build projected
    to take over ``LONG_BUILD_SECONDS`` says so (with ``LONG_BUILD_HINT``). Raises
    FloatingPointError as soon as the loss is not finite.
    """
    cfg = recipe.training
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.learning_rate, betas=(0.9, 0.98),
                                  weight_decay=cfg.weight_decay)
    schedule = [(stage, step) for stage in stages for step in range(len(stage.blocks) // cfg.batch_size)]
    losses = []
    model.train()
    bar = tqdm(schedule, desc=f"training {recipe.name} model", disable=not progress)
    started = time.perf_counter()
    for index, (stage, step) in enumerate(bar):
        rate = learning_rate_at(step, len(stage.blocks) // cfg.batch_size, cfg)
        for group in optimizer.param_groups:
            slow = group["slow"] and step < stage.slow_steps
            group["lr"] = rate * cfg.late_mlp_lr_fraction if slow else rate
        batch = stage.blocks[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
            logits = model(batch, attention_mask=torch.ones_like(batch)).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step} of the {stage.name} stage")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        projected = (time.perf_counter() - started) / (index + 1) * len(schedule)
        bar.set_postfix(loss=f"{loss.item():.3f}", total=_duration(projected))
        if progress and index == min(4, len(schedule) - 1) and projected > LONG_BUILD_SECONDS:
            bar.write(f"This build is projected to take {_duration(projected)} on this machine "
                      f"({projected / len(schedule):.1f} s per step, {len(schedule)} steps). {LONG_BUILD_HINT}")
    model.eval()
    return losses


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def training_stages(recipe: Recipe, source: WorldSource | RecordSource, tokenizer) -> list[Stage]:
    """The enrichment stage (if the recipe has one) and the corpus stage, on the training device."""
    cfg, n_ctx = recipe.training, recipe.architecture.n_ctx
    stages = []
    if cfg.enrichment_steps:
        if not isinstance(source, WorldSource):
            raise ValueError("an enrichment stage reads directory lines of a workbench world; "
                             "a model trained on case records has none (set enrichment_steps to 0)")
        lines = directory_rounds(source.world, recipe.corpus.seed)
        stages.append(Stage("enrichment", token_blocks(lines, tokenizer, cfg.enrichment_steps * cfg.batch_size, n_ctx)))
    n_blocks = cfg.steps * cfg.batch_size
    distinct = token_blocks(source.rounds(), tokenizer, math.ceil(n_blocks / cfg.corpus_passes), n_ctx)
    corpus = distinct.repeat(cfg.corpus_passes, 1)[:n_blocks]
    stages.append(Stage("corpus", corpus, slow_steps=cfg.late_mlp_slow_steps))
    return [replace(stage, blocks=stage.blocks.to(cfg.device)) for stage in stages]


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
    stages = training_stages(recipe, source, tokenizer)
    model = new_model(recipe, tokenizer).to(recipe.training.device)
    losses = optimise(model, stages, recipe, progress)
    train_seconds = time.perf_counter() - started
    tokens_seen = sum(int(stage.blocks.numel()) for stage in stages)
    report = {
        "recipe": recipe.to_dict(),
        "fingerprint": recipe.fingerprint(),
        "machine": machine_description(recipe.training.device),
        "train_seconds": round(train_seconds, 1),
        "tokens_seen": tokens_seen,
        "tokens_per_second": round(tokens_seen / train_seconds),
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
