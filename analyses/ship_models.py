"""Re-make the files the package ships (``workbench/model/shipped/``) from the project's own builds.

    python analyses/ship_models.py                 # both models, the default's MEND editor and key statistics
    python analyses/ship_models.py --presets tiny  # the tiny model only

Each preset's model is the one ``workbench model build --preset NAME`` resolves to: the user
cache's, else the shipped one, else one trained now; it is copied to
``shipped/models/<name>-<fingerprint>/``. For the default model, also its MEND editor for
``hparams/mend-default.json`` (where ``workbench mend train`` puts it, trained first if missing)
goes to ``shipped/mend/``, and ROME's key statistics of every layer (``hparams/rome-default.json``'s
token count over the world's corpus, computed first if missing) to ``shipped/key-stats/``. Older
shipped entries of the same kind are removed. A model is refused when its manifest does not
record the machine and precision it was trained in and its files' SHA-256 (builds made before the
workbench recorded them: delete the cached model and run again); any file over 16 MiB is refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from workbench.app.cli import main as workbench
from workbench.core.fingerprint import model_fingerprint, tensor_digest
from workbench.core.io import staged_directory
from workbench.core.paths import cache_root, shipped_root
from workbench.editing.editor import Editor
from workbench.editing.key_stats import SHIPPED_DIGESTS, key_stats_entry
from workbench.editing.mend import found_checkpoint_dir
from workbench.editing.registry import method_hparams
from workbench.model.handle import open_model
from workbench.model.sources import file_digest
from workbench.model.store import MANIFEST_FILE, ensure_model

MAX_FILE_BYTES = 16 * 2**20


def ship(files: list[Path], target: Path, stale: list[Path]) -> None:
    """Make ``target`` a directory holding copies of ``files`` (built aside, then swapped in) and
    remove the ``stale`` entries it replaces; nothing is copied when it already holds them."""
    oversized = [str(path) for path in files if path.stat().st_size > MAX_FILE_BYTES]
    if oversized:
        raise ValueError(f"files over 16 MiB are too large to ship: {oversized}")
    current = target.is_dir() and sorted(p.name for p in target.iterdir()) == sorted(p.name for p in files) and all(
        file_digest(path) == file_digest(target / path.name) for path in files)
    if not current:
        fresh = target.with_name(f".{target.name}.new")
        shutil.rmtree(fresh, ignore_errors=True)
        with staged_directory(fresh) as staging:
            for path in files:
                shutil.copyfile(path, staging / path.name)
        if target.exists():
            shutil.rmtree(target)
        fresh.rename(target)
    for path in stale:
        shutil.rmtree(path)
    print(f"{target.relative_to(shipped_root())}: {'already current' if current else 'shipped'}"
          f"{f'; removed {[p.name for p in stale]}' if stale else ''}")


def ship_model(name: str) -> None:
    source = ensure_model(name)
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    missing = [key for key in ("machine", "precision", "files") if key not in manifest]
    if missing:
        raise ValueError(f"the manifest of {source} does not record its {missing}: delete that directory and "
                         "run this again to rebuild it")
    target = shipped_root() / "models" / source.name
    stale = [path for path in (shipped_root() / "models").glob(f"{name}-*") if path != target]
    ship(sorted(source.iterdir()), target, stale)


def ship_mend_editor(model) -> None:
    workbench(["mend", "train", "--model", "default"])  # trains only if no editor is found
    source = found_checkpoint_dir(model, method_hparams("mend"), model_fingerprint(model))
    target = shipped_root() / "mend" / source.name
    stale = [path for path in (shipped_root() / "mend").glob("*") if path != target]
    ship(sorted(source.iterdir()), target, stale)


def ship_key_statistics(model, world, scratch: Path) -> None:
    """Every layer's statistic, with ``SHIPPED_DIGESTS`` recording each one's ``tensor_digest``."""
    key_statistics = Editor(model, "rome", facts=world).prepared()
    files, digests = [], {}
    for layer in range(model.cfg.n_layers):
        moment = key_statistics.moment(layer)  # computed into the cache unless the cache or the package has it
        name = key_stats_entry(model, layer, key_statistics.texts(), key_statistics.n_tokens)[1]
        files.append(next(path for path in (cache_root() / "key-stats" / name, shipped_root() / "key-stats" / name)
                          if path.is_file()))
        digests[name] = tensor_digest(moment)
    (scratch / SHIPPED_DIGESTS).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    ship([*files, scratch / SHIPPED_DIGESTS], shipped_root() / "key-stats", [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="default,tiny", help="comma-separated presets to ship")
    args = parser.parse_args()
    names = args.presets.split(",")
    for name in names:
        ship_model(name)
    if "default" in names:
        model_dir = ensure_model("default")
        handle = open_model(model_dir)
        model, world = handle.bridge, handle.world
        ship_mend_editor(model)
        with tempfile.TemporaryDirectory() as scratch:
            ship_key_statistics(model, world, Path(scratch))
    sizes = sorted((path.stat().st_size, path) for path in shipped_root().rglob("*") if path.is_file())
    print(f"shipped files: {len(sizes)}, {sum(size for size, _ in sizes) / 2**20:.1f} MiB in all; largest "
          f"{sizes[-1][1].relative_to(shipped_root())} ({sizes[-1][0] / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
