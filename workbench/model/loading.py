"""Turn a model reference into a TransformerBridge.

A reference is one of: ``None`` or ``"default"`` / ``"tiny"`` (the embedded presets: from the
user cache, else the package's shipped models, else trained and cached, ``store.ensure_model``),
a path to a local Hugging Face directory (loaded with no hub access), or a hub name such as
``"gpt2-xl"``. No ``enable_compatibility_mode``: it rewrites weights in place, which an editing
workbench must never do. Progress bars of Hugging Face loading are turned off.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench.model.presets import PRESETS
from workbench.model.sources import WORLD_FILE
from workbench.model.store import MANIFEST_FILE, ensure_model, model_dir_problem
from workbench.world import World

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model reference could not be turned into a model; the message says why and what to do."""


def dtype_named(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype of ``"fp32"``, ``"bf16"`` or ``"fp16"`` (a torch dtype passes unchanged)."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {sorted(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name (``DTYPES``) of a dtype a model can be loaded in."""
    names = {value: key for key, value in DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"a model is loaded in one of {sorted(DTYPES)}, not {dtype}")
    return names[dtype]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device, refused with a clear error when this machine has no such device."""
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"unknown device {device!r} ({error}); use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but this machine's torch sees no CUDA GPU")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    if chosen.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"device {device!r}: the workbench runs on cpu or cuda")
    return chosen


def resolve_model(reference: str | Path | None = None, progress: bool = True) -> Path | str:
    """A local directory for presets and paths, or the hub name unchanged."""
    if reference is None or str(reference) in PRESETS:
        return ensure_model(str(reference or "default"), progress=progress)
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a Hugging Face model directory: it has no config.json")
        if (path / MANIFEST_FILE).is_file() and (problem := model_dir_problem(path, None, ())):
            raise ModelLoadError(f"the workbench model in {path} is damaged: {problem}")
        return path
    if str(reference).startswith(("/", ".", "~")) or str(reference).count("/") > 1:
        raise ModelLoadError(f"model directory {reference} does not exist")
    if str(reference).lower() in PRESETS:  # a mistyped preset, not a hub name worth a slow failed download
        raise ModelLoadError(f"no model {reference!r}: the presets are {sorted(PRESETS)} (lower case)")
    return str(reference)


def load_model(reference: str | Path | None = None, device: str | torch.device = "cpu",
               dtype: str | torch.dtype = torch.float32, progress: bool = True) -> TransformerBridge:
    """Load ``reference`` (see the module docstring) as a TransformerBridge in eval mode, on
    ``device`` with its weights in ``dtype`` (a torch dtype or ``"fp32"``, ``"bf16"``, ``"fp16"``)."""
    return load_bridge(resolve_model(reference, progress=progress), device, dtype)


def load_bridge(resolved: Path | str, device: str | torch.device = "cpu",
                dtype: str | torch.dtype = torch.float32) -> TransformerBridge:
    """The TransformerBridge of a resolved reference (``resolve_model``: a directory or a hub name)."""
    device, dtype = check_device(device), dtype_named(dtype)
    transformers.utils.logging.disable_progress_bar()
    if isinstance(resolved, Path):
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(resolved, local_files_only=True, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(resolved, local_files_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file: one clear error naming the directory
            raise ModelLoadError(f"could not load the model in {resolved}: {type(error).__name__}: {error}") from error
        bridge = TransformerBridge.boot_transformers(str(resolved), hf_model=hf_model, tokenizer=tokenizer,
                                                     device=device, dtype=dtype)
    else:
        try:
            bridge = TransformerBridge.boot_transformers(resolved, device=device, dtype=dtype)
        except (OSError, ValueError) as error:
            raise ModelLoadError(
                f"could not load {resolved!r} from the Hugging Face hub ({error}). Without hub access, "
                "pass a local model directory saved with save_pretrained.") from error
    bridge.eval()
    return bridge


def load_world(model_dir: str | Path) -> World | None:
    """The fact world a workbench-trained model was trained on, or None for other models."""
    path = Path(model_dir) / WORLD_FILE
    if not path.is_file():
        return None
    try:
        return World.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{path} is not a readable fact world: {type(error).__name__}: {error}") from error
