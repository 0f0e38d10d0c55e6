"""The precision and device a recipe is trained in on the machine at hand, and what that machine is.

A recipe asks for bf16 autocast or fp32 (``TrainingConfig.autocast_bf16``) and names its device
(``TrainingConfig.device``); both decide the trained weights, so both are part of its fingerprint
and a model trained otherwise is cached apart and says so in its manifest. On CUDA, bf16 autocast
is used as the recipe asks. On a CPU it is fast only where the CPU has bf16 instructions
(AVX-512 BF16 or AMX); elsewhere a bf16 autocast matmul has measured 27x slower than fp32. So
before training on a CPU, ``probe_cpu_bf16`` times one matmul of the training's shape both ways,
and ``precision "auto"`` keeps bf16 only when it was faster, training the recipe in fp32 otherwise.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.model.presets import Recipe

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class PrecisionProbe:
    """Best-of-n milliseconds of one ``[rows, width] @ [width, out]`` matmul, fp32 and bf16 autocast."""

    fp32_ms: float
    bf16_ms: float

    @property
    def bf16_is_faster(self) -> bool:
        return self.bf16_ms < self.fp32_ms


def probe_cpu_bf16(rows: int = 2048, width: int = 128, out: int = 512, repeats: int = 3) -> PrecisionProbe:
    """Time the matmul both ways on the CPU (about 0.01 s where bf16 is fast, 1-2 s where it is not)."""
    a, b = torch.randn(rows, width), torch.randn(width, out)

    def best_ms(bf16: bool) -> float:
        times = []
        for _ in range(repeats + 1):  # the first run warms up and is not counted
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                a @ b
            times.append(time.perf_counter() - started)
        return 1000 * min(times[1:])

    return PrecisionProbe(best_ms(False), best_ms(True))


def machine_recipe(recipe: Recipe, device: str = "cpu", precision: str = "auto",
                   probe: Callable[[], PrecisionProbe] | None = None) -> tuple[Recipe, str]:
    """``(recipe as trained here, a sentence saying what was changed and why, or "")``.

    ``precision``: "bf16" or "fp32" force that precision; "auto" keeps the recipe's, except bf16
    autocast on a CPU where ``probe()`` (default ``probe_cpu_bf16``) finds it slower than fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"training runs on 'cpu' or 'cuda', not {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device on this machine")
    wanted_bf16 = recipe.training.autocast_bf16 if precision == "auto" else precision == "bf16"
    reason = f"precision {precision} asked for"
    if precision == "auto" and wanted_bf16 and device == "cpu":
        measured = (probe or probe_cpu_bf16)()
        wanted_bf16 = measured.bf16_is_faster
        reason = (f"on this CPU a bf16 autocast matmul took {measured.bf16_ms:.1f} ms against "
                  f"{measured.fp32_ms:.1f} ms in fp32")
    changes = {key: value for key, value in (("autocast_bf16", wanted_bf16), ("device", device.split(":")[0]))
               if getattr(recipe.training, key) != value}
    if not changes:
        return recipe, ""
    trained = recipe.with_overrides(recipe.name, {"training": changes})
    described = ", ".join(f"{key} {value}" for key, value in changes.items())
    return trained, (f"training the {recipe.name} recipe with {described} ({reason}): a recipe of its own, "
                     f"fingerprint {trained.fingerprint()} (the recipe's: {recipe.fingerprint()}), so its model "
                     "is kept apart from the recipe's")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: str) -> dict:
    """What a model's manifest records about the machine that trained it."""
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name()
    return {"device": device, "device_name": name, "threads": torch.get_num_threads(), "torch": torch.__version__}
