"""The model cache: keyed by recipe, written atomically, never trusted when it does not match."""

import json
import shutil

import pytest

from workbench.core import paths
from workbench.model import store
from workbench.model.presets import preset


@pytest.fixture
def fake_training(monkeypatch, tmp_path):
    """Replace training with a fast fake that writes the expected files and counts its calls."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "SHIPPED_ROOT", tmp_path / "shipped")
    calls = []

    def fake_train_model(recipe, out_dir, progress=True, source=None):
        calls.append(out_dir)
        for name in (*store.BASE_FILES, *(source or store.WorldSource).files):
            if name != store.MANIFEST_FILE:
                (out_dir / name).write_text("{}")
        return {"fake": True}

    monkeypatch.setattr(store, "train_model", fake_train_model)
    return calls


def test_cache_is_built_once_and_then_reused(fake_training):
    first = store.ensure_model("tiny", progress=False)
    assert store.ensure_model("tiny", progress=False) == first
    assert len(fake_training) == 1
    manifest = json.loads((first / store.MANIFEST_FILE).read_text())
    assert manifest["fingerprint"] == preset("tiny").fingerprint()
    assert first.name.endswith(preset("tiny").fingerprint())


@pytest.mark.parametrize("damage", ["mismatched manifest", "corrupt manifest", "missing weights"])
def test_a_damaged_cache_is_rebuilt_not_trusted(fake_training, damage):
    directory = store.ensure_model("tiny", progress=False)
    if damage == "mismatched manifest":
        (directory / store.MANIFEST_FILE).write_text(json.dumps({"fingerprint": "0" * 16}))
    elif damage == "corrupt manifest":
        (directory / store.MANIFEST_FILE).write_text("{not json")
    else:
        (directory / "model.safetensors").unlink()
    assert store.ensure_model("tiny", progress=False) == directory
    assert len(fake_training) == 2
    assert store.is_complete(directory, preset("tiny").fingerprint())


def test_a_failed_build_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "SHIPPED_ROOT", tmp_path / "shipped")

    def failing_train_model(recipe, out_dir, progress=True, source=None):
        (out_dir / "config.json").write_text("{}")
        raise FloatingPointError("training loss became nan at step 3")

    monkeypatch.setattr(store, "train_model", failing_train_model)
    with pytest.raises(FloatingPointError, match="nan"):
        store.ensure_model("tiny", progress=False)
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []


def test_build_into_never_overwrites_an_existing_directory(fake_training, tmp_path):
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        store.build_into(preset("tiny"), existing, progress=False)
    assert (existing / "notes.txt").read_text() == "keep me"
    assert fake_training == []


def test_recipes_have_distinct_stable_fingerprints():
    assert preset("tiny").fingerprint() == preset("tiny").fingerprint()
    assert preset("tiny").fingerprint() != preset("default").fingerprint()
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def fake_shipped_copy(directory):
    """Copy the (fake) cached build ``directory`` to where the tiny preset is shipped."""
    shipped = store.shipped_model_dir(preset("tiny"))
    shutil.copytree(directory, shipped)
    return shipped


def test_the_cache_comes_before_the_shipped_model_and_the_shipped_model_before_training(fake_training):
    built = store.ensure_model("tiny", progress=False)
    shipped = fake_shipped_copy(built)
    assert store.ensure_model("tiny", progress=False) == built
    shutil.rmtree(built)
    assert store.ensure_model("tiny", progress=False) == shipped and len(fake_training) == 1


def test_a_file_that_differs_from_its_recorded_digest_is_not_trusted(fake_training, capsys):
    directory = store.ensure_model("tiny", progress=False)
    assert json.loads((directory / store.MANIFEST_FILE).read_text())["files"]["model.safetensors"]
    (directory / "model.safetensors").write_text('{"flipped": 1}')
    assert not store.is_complete(directory, preset("tiny").fingerprint())
    assert store.ensure_model("tiny", progress=False) == directory and len(fake_training) == 2
    message = f"corrupt cache at {directory} (SHA-256 not the one its manifest records: model.safetensors"
    assert message in capsys.readouterr().err


def test_a_damaged_shipped_model_says_so_and_is_not_used(fake_training, capsys):
    built = store.ensure_model("tiny", progress=False)
    shipped = fake_shipped_copy(built)
    shutil.rmtree(built)
    (shipped / "world.json").write_text("tampered")
    assert store.ensure_model("tiny", progress=False) == built and len(fake_training) == 2
    message = f"the shipped model at {shipped} is damaged (SHA-256 not the one its manifest records: world.json"
    assert message in capsys.readouterr().err


def test_a_build_that_waits_for_another_says_so(fake_training, capsys):
    import fcntl
    import threading
    import time

    target = store.cached_model_dir(preset("tiny"))
    target.parent.mkdir(parents=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process's build, as far as ensure_model can tell
        waiting = threading.Thread(target=store.ensure_model, args=("tiny",), kwargs={"progress": False})
        waiting.start()
        said, deadline = "", time.monotonic() + 10
        while "waiting for it to finish" not in said and time.monotonic() < deadline:
            time.sleep(0.05)
            said += capsys.readouterr().err
        assert f"another process is building {target}; waiting" in said
        assert waiting.is_alive() and fake_training == []
    waiting.join(timeout=10)
    assert not waiting.is_alive() and len(fake_training) == 1
