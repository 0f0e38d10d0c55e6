"""Command-line options shared by the commands that load a model or run over many cases."""

from __future__ import annotations

import argparse

from workbench.app.runs import RunOptions
from workbench.core.journal import journal_path
from workbench.model.handle import ModelHandle, open_model
from workbench.model.loading import DTYPES


def add_machine_options(command) -> None:
    """``--device`` and ``--dtype``: where the model runs and the dtype of its weights."""
    command.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    command.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                         help="the weights' dtype (default fp32); the edit maths runs in fp32 whatever it is")


def add_run_options(command) -> None:
    """``--resume``, ``--workers`` and ``--ray-address`` of a run over many cases."""
    command.add_argument("--resume", action="store_true",
                         help="continue the interrupted run in --out (its settings must be this command's)")
    command.add_argument("--workers", type=count, default=1,
                         help="Ray workers sharing the cases, each loading the model once (default 1: no Ray)")
    command.add_argument("--ray-address", help="run the workers on this existing Ray cluster")


def add_sequential_options(command) -> None:
    """``--sequential N`` and ``--every K``: edit N cases one after another, measuring every K."""
    command.add_argument("--sequential", type=count, metavar="N",
                         help="edit N cases one after another, each on the model as already edited, and write "
                              "sequential.{jsonl,json,md,png,svg} (cases: --cases, else the world's test, then "
                              "train split)")
    command.add_argument("--every", type=count, metavar="K",
                         help="with --sequential: measure after every K cases (default N/10, whole batches)")


def open_model_of(args) -> ModelHandle:
    """The handle of ``args.model`` on ``args.device`` in ``args.dtype``."""
    return open_model(args.model, device=args.device, dtype=args.dtype)


def run_options(args, out_is_file: bool = False) -> RunOptions:
    """The run options of a command whose ``--out`` is its output directory (or file)."""
    return RunOptions(journal_path(args.out, out_is_file), args.resume, args.force, args.workers, args.ray_address)


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (how many cases, samples, repetitions)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value
