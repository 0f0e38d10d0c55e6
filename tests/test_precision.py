"""Training precision follows the machine, and a model trained otherwise is cached apart and says so."""

import json

import pytest

from workbench.core import paths
from workbench.model import store, training
from workbench.model.precision import PrecisionProbe, machine_recipe, probe_cpu_bf16
from workbench.model.presets import preset

SLOW_BF16 = PrecisionProbe(fp32_ms=30.0, bf16_ms=826.0)
FAST_BF16 = PrecisionProbe(fp32_ms=3.0, bf16_ms=1.5)


def test_bf16_is_kept_on_a_cpu_only_where_the_probe_finds_it_faster():
    default = preset("default")
    assert default.training.autocast_bf16
    assert machine_recipe(default, probe=lambda: FAST_BF16) == (default, "")
    trained, decision = machine_recipe(default, probe=lambda: SLOW_BF16)
    assert not trained.training.autocast_bf16 and trained.name == "default"
    assert trained.fingerprint() != default.fingerprint()
    assert "826.0 ms against 30.0 ms" in decision and trained.fingerprint() in decision


def test_an_fp32_recipe_is_not_probed_and_forced_precisions_are_obeyed():
    def no_probe():
        raise AssertionError("an fp32 recipe needs no probe")

    tiny = preset("tiny")
    assert machine_recipe(tiny, probe=no_probe) == (tiny, "")
    forced, decision = machine_recipe(tiny, precision="bf16", probe=no_probe)
    assert forced.training.autocast_bf16 and "precision bf16 asked for" in decision
    assert machine_recipe(preset("default"), precision="fp32", probe=no_probe)[0].training.autocast_bf16 is False


def test_bad_devices_and_precisions_are_named():
    with pytest.raises(ValueError, match="precision must be one of"):
        machine_recipe(preset("tiny"), precision="fp16")
    with pytest.raises(ValueError, match="'cpu' or 'cuda', not 'mps'"):
        machine_recipe(preset("tiny"), device="mps")


def test_a_gpu_trained_recipe_has_its_own_fingerprint(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    trained, decision = machine_recipe(preset("default"), device="cuda")
    assert trained.training.device == "cuda" and trained.fingerprint() != preset("default").fingerprint()
    assert "device cuda" in decision
    assert "device" not in preset("default").to_dict()["training"]  # a CPU recipe's fingerprint is unchanged


def test_the_probe_measures_both_precisions():
    probe = probe_cpu_bf16(rows=64, width=32, out=32, repeats=1)
    assert probe.fp32_ms > 0 and probe.bf16_ms > 0


def test_where_bf16_is_slow_the_default_trains_in_fp32_into_its_own_cache_entry(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "SHIPPED_ROOT", tmp_path / "shipped")
    monkeypatch.setattr("workbench.model.precision.probe_cpu_bf16", lambda: SLOW_BF16)
    trained = []

    def fake_train_model(recipe, out_dir, progress=True, source=None):
        trained.append(recipe)
        for name in (*store.BASE_FILES, *store.WorldSource.files):
            if name != store.MANIFEST_FILE:
                (out_dir / name).write_text("{}")
        return {}

    monkeypatch.setattr(store, "train_model", fake_train_model)
    directory = store.ensure_model("default")
    fp32 = preset("default").with_overrides("default", {"training": {"autocast_bf16": False}})
    assert directory == store.cached_model_dir(fp32) and trained == [fp32]
    manifest = json.loads((directory / store.MANIFEST_FILE).read_text())
    assert manifest["precision"] == "fp32" and manifest["recipe"]["training"]["autocast_bf16"] is False
    assert "826.0 ms" in capsys.readouterr().err
    assert store.ensure_model("default") == directory and len(trained) == 1


def test_a_build_projected_over_half_an_hour_says_so_at_its_start(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(training, "LONG_BUILD_SECONDS", 0)
    recipe = preset("tiny").with_overrides("tiny-short", {"training": {"steps": 6, "warmup_steps": 2}})
    torch.manual_seed(0)
    model = training.GPT2LMHeadModel(training.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1,
                                                         n_head=2))
    blocks = torch.randint(0, 50, (6 * recipe.training.batch_size, 16))
    training.optimise(model, [training.Stage("corpus", blocks)], recipe, progress=True)
    output = capsys.readouterr()
    assert "This build is projected to take" in output.out + output.err
    assert "--device cuda" in output.out + output.err
