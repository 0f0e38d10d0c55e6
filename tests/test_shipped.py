"""The shipped models and editor: made from the current recipes, intact, and as good as measured."""

import json

import pytest

from workbench.core import paths
from workbench.core.cases import parse_cases
from workbench.core.fingerprint import model_fingerprint, tensor_digest
from workbench.editing.editor import Editor
from workbench.editing.mend import default_checkpoint_dir
from workbench.editing.registry import method_hparams
from workbench.evaluation.metrics import case_metrics, measure
from workbench.model import store
from workbench.model.loading import load_model, load_world
from workbench.model.presets import PRESETS, preset
from workbench.model.recall import fact_recall
from workbench.world import export_edit_cases

REMAKE = "python analyses/ship_models.py --presets {name}"
MAX_FILE_BYTES = 16 * 2**20


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_ships_one_intact_model_of_its_current_recipe(name):
    shipped = sorted((paths.shipped_root() / "models").glob(f"{name}-*"))
    assert [path.name for path in shipped] == [store.model_dir_name(preset(name))], (
        f"the shipped {name} model is not the one of the current {name} recipe (fingerprint "
        f"{preset(name).fingerprint()}): re-make it with `{REMAKE.format(name=name)}`")
    manifest = json.loads((shipped[0] / store.MANIFEST_FILE).read_text())
    assert store.is_complete(shipped[0], preset(name).fingerprint()), f"{shipped[0]} is damaged"
    assert set(manifest["files"]) == {path.name for path in shipped[0].iterdir()} - {store.MANIFEST_FILE}
    expected_precision = "bf16 autocast" if preset(name).training.autocast_bf16 else "fp32"
    assert manifest["precision"] == expected_precision and manifest["machine"]["device"] == "cpu"


def test_no_shipped_file_is_over_16_mib():
    files = [path for path in paths.shipped_root().rglob("*") if path.is_file()]
    assert files and all(path.stat().st_size <= MAX_FILE_BYTES for path in files)


def test_presets_resolve_to_the_shipped_models_when_the_cache_is_empty(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    for name in PRESETS:
        assert store.ensure_model(name, progress=False) == store.shipped_model_dir(preset(name))
    assert not (tmp_path / "models").exists()  # nothing trained, nothing copied


@pytest.fixture(scope="module")
def shipped_default():
    directory = store.shipped_model_dir(preset("default"))
    return load_model(directory), load_world(directory)


def test_the_shipped_default_recalls_its_facts_as_its_report_says(shipped_default):
    model, world = shipped_default
    measured = fact_recall(model.original_model, model.tokenizer, world, "corpus")
    report = json.loads((store.shipped_model_dir(preset("default")) / "training_report.json").read_text())
    assert measured["recall"] >= 0.98
    assert measured["recall"] == pytest.approx(report["recall_corpus"]["recall"], abs=1e-9)


def test_the_shipped_mend_editor_belongs_to_the_shipped_default_and_moves_its_targets(shipped_default):
    model, world = shipped_default
    cached = default_checkpoint_dir(model, method_hparams("mend"), model_fingerprint(model))
    directory = paths.shipped_root() / "mend" / cached.name  # whatever the user cache holds
    assert directory.is_dir(), ("no shipped MEND editor matches the shipped default model and "
                                "hparams/mend-default.json: re-make it with `python analyses/ship_models.py`")
    editor = Editor(model, "mend", facts=world, checkpoint=directory)
    cases = parse_cases(export_edit_cases(world, "test"), "the test split")[:20]
    efficacy = []
    for case in cases:
        before = measure(model, case, fluency_tokens=0)
        with editor(case.request).applied(model):
            efficacy.append(case_metrics(before, measure(model, case, fluency_tokens=0))["efficacy"])
    assert sum(efficacy) / len(efficacy) >= 0.85  # 0.955 on the 200 cases of the comparison


def test_the_shipped_key_statistics_are_read_intact_not_recomputed(shipped_default, monkeypatch, tmp_path):
    from workbench.editing import key_stats

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    model, world = shipped_default
    digests = json.loads((paths.shipped_root() / "key-stats" / key_stats.SHIPPED_DIGESTS).read_text())
    assert len(digests) == model.cfg.n_layers
    monkeypatch.setattr(key_stats, "compute_key_second_moment", lambda *a, **k: pytest.fail("recomputed"))
    key_statistics = Editor(model, "rome", facts=world).prepared()
    for layer in range(model.cfg.n_layers):
        moment = key_statistics.moment(layer)
        name = key_stats.key_stats_entry(model, layer, key_statistics.texts(), key_statistics.n_tokens)[1]
        assert tensor_digest(moment) == digests[name]
    assert not (tmp_path / "key-stats").exists()
