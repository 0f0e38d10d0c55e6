"""Move trained models through a channel that takes only a few files of limited size.

    python analyses/checkpoint_transfer.py pack RUN_DIR --out DIR [--part-mib 15.9]
    python analyses/checkpoint_transfer.py unpack DIR... --out RUN_DIR

``pack`` puts every file under ``RUN_DIR`` (the models of ``analyses/recipe_sweep.py`` and their
reports) into one gzipped tar, the weights rounded to bfloat16, split into numbered parts of at
most ``--part-mib`` MiB (``models.tar.gz.00``, ``.01``, ...) beside ``models.sha256``. Small files
come first and the weights after them, model by model, so the first parts hold every report.

``unpack`` joins the parts found in the given folders, checks the digest, and writes the models
under ``RUN_DIR`` (which must not exist) with their weights back in float32. Rounding to bfloat16
changes the weights: each unpacked model's ``training_report.json`` says so
(``"weights_transferred_as": "bfloat16"``), and measurements are of the rounded model.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load, save

WEIGHTS_FILE = "model.safetensors"
REPORT_FILE = "training_report.json"
ARCHIVE = "models.tar.gz"
DIGEST_FILE = "models.sha256"
TRANSFER_DTYPE = torch.bfloat16
PART_MIB = 15.9  # under the 16 MiB a lent machine sends back per file


def _converted(path: Path, dtype: torch.dtype) -> bytes:
    """The safetensors file at ``path`` with its floating-point tensors cast to ``dtype``."""
    tensors = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor
               for name, tensor in load(path.read_bytes()).items()}
    return save(tensors, metadata={"format": "pt"})


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def pack(run_dir: Path, out: Path, part_mib: float) -> list[Path]:
    """The parts written (see the module docstring)."""
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    if not any(p.name == WEIGHTS_FILE for p in files):
        raise ValueError(f"{run_dir} holds no {WEIGHTS_FILE}: nothing to pack")
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for path in sorted(files, key=lambda p: p.name == WEIGHTS_FILE):  # small files first
            name = str(path.relative_to(run_dir))
            _add(archive, name, _converted(path, TRANSFER_DTYPE) if path.name == WEIGHTS_FILE else path.read_bytes())
    data = buffer.getvalue()
    part_bytes = int(part_mib * 2**20)
    parts = []
    for index, start in enumerate(range(0, len(data), part_bytes)):
        parts.append(out / f"{ARCHIVE}.{index:02d}")
        parts[-1].write_bytes(data[start:start + part_bytes])
    (out / DIGEST_FILE).write_text(hashlib.sha256(data).hexdigest() + "\n")
    return parts


def unpack(folders: list[Path], run_dir: Path) -> list[Path]:
    """The model folders written (see the module docstring)."""
    if run_dir.exists():
        raise FileExistsError(f"{run_dir} exists; unpack writes a new folder and overwrites nothing")
    parts = sorted((p for folder in folders for p in folder.glob(f"{ARCHIVE}.[0-9][0-9]")), key=lambda p: p.name)
    digests = {(folder / DIGEST_FILE).read_text().strip() for folder in folders if (folder / DIGEST_FILE).exists()}
    if not parts or len(digests) != 1:
        raise ValueError(f"need the parts {ARCHIVE}.NN and one {DIGEST_FILE} in {[str(f) for f in folders]}")
    numbers = [int(p.name.rsplit(".", 1)[1]) for p in parts]
    if numbers != list(range(len(parts))):
        raise ValueError(f"parts missing or repeated: found {numbers}")
    data = b"".join(p.read_bytes() for p in parts)
    if hashlib.sha256(data).hexdigest() != digests.pop():
        raise ValueError("the joined parts do not match the digest: a part is missing, cut short or from another pack")
    with tempfile.TemporaryDirectory(dir=run_dir.parent) as scratch:
        staging = Path(scratch) / "models"
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            archive.extractall(staging, filter="data")
        models = sorted(p.parent for p in staging.rglob(WEIGHTS_FILE))
        for model in models:
            (model / WEIGHTS_FILE).write_bytes(_converted(model / WEIGHTS_FILE, torch.float32))
            report_path = model / REPORT_FILE
            if report_path.exists():
                report = json.loads(report_path.read_text())
                report["weights_transferred_as"] = str(TRANSFER_DTYPE).removeprefix("torch.")
                report_path.write_text(json.dumps(report, indent=2))
        staging.rename(run_dir)
    return [run_dir / model.relative_to(staging) for model in models]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("run_dir", type=Path)
    packing.add_argument("--out", type=Path, required=True)
    packing.add_argument("--part-mib", type=float, default=PART_MIB)
    unpacking = commands.add_parser("unpack")
    unpacking.add_argument("folders", type=Path, nargs="+")
    unpacking.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        for part in pack(args.run_dir, args.out, args.part_mib):
            print(f"{part} {part.stat().st_size / 2**20:.1f} MiB")
    else:
        for model in unpack(args.folders, args.out):
            print(model)


if __name__ == "__main__":
    main()
