"""Export an edited model as a new Hugging Face directory; the base model is never written.

The base model is loaded afresh from its own directory, every edit's deltas are added to its MLP
output weights, and the result is saved into a temporary sibling of the target that is renamed
into place only when complete: the weights, the tokenizer, the companion files of a
workbench-trained model (its fact world, or the facts and corpus of a case file) and
``edits.json`` describing the edits. The target must not exist. The shared, possibly hooked,
model in memory is not touched at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench.core.edit import Edit, add_to_weight, checked_weights, require_weight_edits
from workbench.core.io import staged_directory
from workbench.model.sources import COMPANION_FILES

EDITS_FILE = "edits.json"


def describe_edits(edits: Sequence[Edit]) -> list[dict]:
    """What ``edits.json`` records of each edit: method, request, layers and hyperparameters."""
    return [{"method": edit.method, "request": dataclasses.asdict(edit.request), "layers": list(edit.layers),
             "hparams": edit.hparams} for edit in edits]


def check_export_target(out_dir: str | Path) -> None:
    """Refuse an existing ``out_dir`` (call it before expensive work too, to fail early)."""
    if os.path.lexists(out_dir):  # a dangling symbolic link counts: it is someone's path
        raise FileExistsError(f"{out_dir} already exists; export writes a new directory only")


def export_edited_model(base_dir: str | Path, edits: Sequence[Edit], out_dir: str | Path,
                        allow_other_base: bool = False) -> Path:
    """Write the model of ``base_dir`` with ``edits`` committed to the new directory ``out_dir``,
    once every edit is known to fit its weights (``edit.checked_weights``)."""
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    if not (base_dir / "config.json").is_file():
        raise ValueError(f"export needs the base model's local directory; {base_dir} has no config.json")
    check_export_target(out_dir)
    if not edits:
        raise ValueError("there are no edits to export")
    require_weight_edits(edits)
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    for weight, delta in checked_weights(edits, lambda site: model.get_submodule(site.module).weight,
                                         allow_other_base):
        add_to_weight(weight, delta)
    with staged_directory(out_dir) as staging:
        model.save_pretrained(staging)
        AutoTokenizer.from_pretrained(base_dir, local_files_only=True).save_pretrained(staging)
        for name in COMPANION_FILES:
            if (base_dir / name).is_file():
                shutil.copyfile(base_dir / name, staging / name)
        manifest = {"base_model": str(base_dir.resolve()), "edits": describe_edits(edits)}
        (staging / EDITS_FILE).write_text(json.dumps(manifest, indent=1))
    return out_dir
