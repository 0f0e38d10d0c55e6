"""Train several variants of a preset recipe and tabulate their recall.

    python analyses/recipe_sweep.py --variants variants.json --out runs/sweep [--device cuda] [--jobs 4] [--only a b]

Each variant trains in the precision ``machine_recipe`` chooses on ``--device`` (on a CPU
without fast bf16: fp32).

``variants.json`` maps a variant name to recipe overrides, e.g.
``{"lr6e-3": {"training": {"learning_rate": 0.006}}, "no-updates": {"corpus": {...}}}``.
Each variant writes ``<out>/<name>/`` (the model) and ``<out>/<name>.json`` (its report);
``<out>/table.md`` lists them all.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from pathlib import Path

import torch

from workbench.core.io import write_text_atomic
from workbench.model.precision import machine_recipe
from workbench.model.presets import preset
from workbench.model.training import train_model


def run_variant(job: tuple[str, str, dict, str, str, int]) -> dict:
    base, name, overrides, out, device, threads = job
    torch.set_num_threads(threads)  # parallel jobs must not oversubscribe the cores
    recipe, _ = machine_recipe(preset(base).with_overrides(name, overrides), device)
    model_dir = Path(out) / name
    model_dir.mkdir(parents=True)
    report = train_model(recipe, model_dir, progress=False)
    summary = {"variant": name, "overrides": overrides, **{k: report[k] for k in (
        "train_seconds", "tokens_seen", "tokens_per_second", "final_loss", "recall_corpus", "recall_heldout")}}
    write_text_atomic(Path(out) / f"{name}.json", json.dumps(summary, indent=2))
    return summary


def table(summaries: list[dict]) -> str:
    lines = ["| variant | overrides | train s | tokens | final loss | recall corpus | recall held-out |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {s['variant']} | `{json.dumps(s['overrides'])}` | {s['train_seconds']} | {s['tokens_seen']} | "
              f"{s['final_loss']} | {s['recall_corpus']['recall']:.3f} | {s['recall_heldout']['recall']:.3f} |"
              for s in summaries]
    return "\n".join(lines) + "\n"


def sweep(variants: dict[str, dict], base: str, out: str, device: str, jobs: int) -> list[dict]:
    """Train every variant (``jobs`` at a time, the cores shared among them); write and return their
    summaries and ``<out>/table.md``."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    work = [(base, name, overrides, out, device, threads) for name, overrides in variants.items()]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        summaries = pool.map(run_variant, work)
    write_text_atomic(Path(out) / "table.md", table(summaries), overwrite=True)
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True)
    parser.add_argument("--base", default="default")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", nargs="+", help="train only these variants of the file")
    args = parser.parse_args()
    variants = json.loads(Path(args.variants).read_text())
    unknown = sorted(set(args.only or ()) - set(variants))
    if unknown:
        parser.error(f"{args.variants} has no variant {', '.join(unknown)}; it has {', '.join(variants)}")
    if args.only:
        variants = {name: overrides for name, overrides in variants.items() if name in args.only}
    summaries = sweep(variants, args.base, args.out, args.device, args.jobs)
    print(table(summaries))


if __name__ == "__main__":
    main()
