"""Train a round of variants on a lent GPU inside a fixed time, and pack them to be carried back.

    PYTHONPATH=. python3 analyses/gpu_round.py --variants analyses/variants/specimen-round5.json \\
        --budget 530 --out runs/specimen-round5 --parts runs/round5-parts --send "$OUT"

(``PYTHONPATH=.`` where the package is not installed, as on a lent machine.)

A lent machine gives a few minutes, and its files come back only in a few parts of limited size.
This script spends the time in one go:

1. a pipeline check: the last variant trains for 20 steps and its model is packed, so that a
   broken environment fails in seconds rather than at the end;
2. the speed of that variant's corpus generation (tokens per second, on the CPU) and of one
   training step with all variants training at once (``--jobs`` processes, the difference
   between 70 and 20 steps);
3. every variant's ``steps`` sized so that the round ends inside ``--budget`` seconds, counted
   from the start (between ``MIN_STEPS`` and ``MAX_STEPS``), written to ``<out>/variants.json``;
4. the round, as ``recipe_sweep.py`` trains it, into ``<out>``;
5. ``checkpoint_transfer.py pack`` into ``--parts``, and as many of the first parts as one
   transfer takes (``SEND_MIB``) copied to ``--send``; the log ends with the command that sends
   the rest.

Every step's timing goes to ``<out>/round.log``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

import torch
from checkpoint_transfer import DIGEST_FILE, PART_MIB, pack
from recipe_sweep import run_variant, sweep

from workbench.model.precision import machine_recipe
from workbench.model.presets import Recipe, preset
from workbench.model.sources import WorldSource
from workbench.model.training import Stage, new_model, optimise, token_blocks

MIN_STEPS, MAX_STEPS = 400, 4000
CHECK_STEPS = 20
SEND_MIB = 63.9  # what one transfer takes back, less room for the log


def corpus_tokens_per_second(recipe: Recipe, n_tokens: int = 2_000_000):
    """How fast the recipe's corpus is generated and tokenized on this machine's CPU, and the
    recipe's tokenizer: ``(tokens per second, tokenizer)``."""
    source = WorldSource(recipe)
    tokenizer = source.tokenizer()
    rounds = source.rounds()
    started = time.perf_counter()
    token_blocks(rounds, tokenizer, n_tokens // recipe.architecture.n_ctx, recipe.architecture.n_ctx)
    return n_tokens / (time.perf_counter() - started), tokenizer


def _timed_steps(job: tuple[Recipe, object, int]) -> float:
    """Seconds for ``steps`` training steps of the recipe's model on random blocks."""
    recipe, tokenizer, steps = job
    cfg, device = recipe.training, recipe.training.device
    model = new_model(recipe, tokenizer).to(device)
    blocks = torch.randint(0, len(tokenizer), (steps * cfg.batch_size, recipe.architecture.n_ctx), device=device)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    synchronize()
    started = time.perf_counter()
    optimise(model, [Stage("timing", blocks)], recipe, progress=False)
    synchronize()
    return time.perf_counter() - started


def contended_step_seconds(recipe: Recipe, tokenizer, n_processes: int, short: int = 20, long: int = 70) -> float:
    """Seconds per training step with ``n_processes`` processes training at once (the slowest of
    them; the difference between ``long`` and ``short`` steps, so start-up costs cancel, or where
    noise makes that difference negative, the long run's mean, start-up included)."""
    with multiprocessing.get_context("spawn").Pool(n_processes) as pool:
        seconds = {steps: max(pool.map(_timed_steps, [(recipe, tokenizer, steps)] * n_processes))
                   for steps in (short, long)}
    difference = (seconds[long] - seconds[short]) / (long - short)
    return difference if difference > 0 else seconds[long] / long


def sized_steps(seconds_left: float, fixed_seconds: float, step_seconds: float, generation_seconds: float) -> int:
    """The steps that fit in ``seconds_left``: ``fixed_seconds`` once, then per step a training step
    and the generation of its share of the corpus; clipped to ``[MIN_STEPS, MAX_STEPS]``."""
    steps = (seconds_left - fixed_seconds) / (step_seconds + generation_seconds)
    return int(min(MAX_STEPS, max(MIN_STEPS, steps)))


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True)
    parser.add_argument("--base", default="default")
    parser.add_argument("--budget", type=float, required=True, help="seconds for the whole round, packing included")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", type=Path, required=True)
    parser.add_argument("--send", type=Path, help="where the first parts go (the transfer folder)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, help="variants trained at once (default: all)")
    args = parser.parse_args()
    for path in (args.out, args.parts):
        if path.exists():
            raise FileExistsError(f"{path} exists; this script writes new folders only")
    args.out.mkdir(parents=True)
    log = args.out / "round.log"

    def say(text: str) -> None:
        line = f"[{time.perf_counter() - started:6.1f} s] {text}"
        print(line, flush=True)
        with log.open("a") as handle:
            handle.write(line + "\n")

    variants = json.loads(Path(args.variants).read_text())
    jobs = args.jobs or len(variants)
    name, overrides = list(variants.items())[-1]
    check = {**overrides, "training": {**overrides.get("training", {}), "steps": CHECK_STEPS}}
    with tempfile.TemporaryDirectory() as scratch:
        check_started = time.perf_counter()
        run_variant((args.base, f"check-{name}", check, scratch, args.device, torch.get_num_threads()))
        fixed_seconds = time.perf_counter() - check_started
        pack(Path(scratch), Path(scratch) / "parts", PART_MIB)
    say(f"pipeline check passed: {name} trained for {CHECK_STEPS} steps, evaluated, saved and packed "
        f"in {fixed_seconds:.1f} s")
    recipe, _ = machine_recipe(preset(args.base).with_overrides(name, overrides), args.device)
    tokens_per_second, tokenizer = corpus_tokens_per_second(recipe)
    cfg = recipe.training
    generation_seconds = cfg.batch_size * recipe.architecture.n_ctx / cfg.corpus_passes / tokens_per_second
    say(f"corpus of {name}: {tokens_per_second:,.0f} tokens/s, {generation_seconds:.3f} s per step")
    step_seconds = contended_step_seconds(recipe, tokenizer, jobs)
    say(f"a training step with {jobs} variants at once: {step_seconds:.3f} s")
    seconds_left = args.budget - (time.perf_counter() - started) - 60  # packing and a margin
    steps = sized_steps(seconds_left, fixed_seconds, step_seconds, generation_seconds)
    sized = {n: {**o, "training": {**o.get("training", {}), "steps": steps}} for n, o in variants.items()}
    (args.out / "variants.json").write_text(json.dumps(sized, indent=2))
    say(f"{seconds_left:.0f} s left: {steps} steps per variant")
    for summary in sweep(sized, args.base, str(args.out), args.device, jobs):
        say(json.dumps(summary))
    parts = pack(args.out, args.parts, PART_MIB)
    say(f"packed into {len(parts)} parts of {', '.join(f'{p.stat().st_size / 2**20:.1f}' for p in parts)} MiB")
    if args.send:
        args.send.mkdir(parents=True, exist_ok=True)
        sent, size = 0, 0.0
        while sent < len(parts) and size + parts[sent].stat().st_size / 2**20 <= SEND_MIB:
            shutil.copy(parts[sent], args.send)
            size += parts[sent].stat().st_size / 2**20
            sent += 1
        shutil.copy(args.parts / DIGEST_FILE, args.send)
        say(f"sent {sent} parts, {size:.1f} MiB")
        if sent < len(parts):
            rest = " ".join(str(part) for part in parts[sent:])
            say(f"send the rest with: cp {rest} {args.parts / DIGEST_FILE} \"$OUT\"")
    say("done")


if __name__ == "__main__":
    main()
