"""The analysis scripts run end to end on the tiny model and tabulate what they measured."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest

ANALYSES = Path(__file__).parents[1] / "analyses"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(ANALYSES))
    try:
        import checkpoint_transfer
        import enrichment_check
        import hparam_sweep
        import specimen_sweep

        yield hparam_sweep, specimen_sweep, enrichment_check, checkpoint_transfer
    finally:
        sys.path.remove(str(ANALYSES))


def test_hparam_sweep_tabulates_every_value(tmp_path, monkeypatch, capsys, scripts):
    hparam_sweep, *_ = scripts
    out = tmp_path / "ft-l"
    monkeypatch.setattr(sys, "argv", ["hparam_sweep", "--model", "tiny", "--method", "ft-l", "--param",
                                      "norm_constraint", "--values", "0.0005,none", "--n", "2", "--out", str(out)])
    hparam_sweep.main()
    result = json.loads(out.with_suffix(".json").read_text())
    assert [row["value"] for row in result["rows"]] == [0.0005, None] and result["split"] == "train"
    assert all(row["n_cases"] == 2 for row in result["rows"])
    # an unbounded fine-tune moves the edited facts at least as often as a tightly bounded one
    assert result["rows"][1]["efficacy"]["mean"] >= result["rows"][0]["efficacy"]["mean"]
    assert out.with_suffix(".md").read_text().count("\n") == 4
    with pytest.raises(FileExistsError):
        hparam_sweep.main()


@pytest.mark.slow
def test_specimen_measurement_of_the_tiny_model(scripts):
    _, specimen_sweep, *_ = scripts
    specimen = specimen_sweep.measure_specimen("tiny", n_facts=3, n_edits=2, n_ike=2)
    assert specimen["recall"]["corpus"] >= 0.95 and specimen["n_facts_traced"] == 3
    effects = specimen["indirect_effects"]
    assert set(effects) == {"mlp_last_subject", "mlp_last_token", "resid_last_subject", "resid_last_token",
                            "resid_whole_subject"}
    assert all(len(values) == 4 for values in effects.values())
    assert [row["layer"] for row in specimen["rome_sweep"]] == [0, 1, 2, 3]
    orderings = specimen["indirect_effects_by_ordering"]
    assert set(orderings) == {"subject first", "relation first"}
    assert all(o["n_facts"] == 3 and len(o["mlp_last_subject"]) == 4 for o in orderings.values())
    assert {name: len(values) for name, values in specimen["attention_knockout"].items()} == {
        "last_subject": 4, "subject": 4}
    assert all(len(probe["accuracy"]) == 4 for probe in specimen["probes"].values())
    assert set(specimen["ike"]) == {"k8", "k0"} and specimen["ike"]["k0"]["efficacy"]["n"] == 2
    row = specimen_sweep.table({"tiny": specimen}).splitlines()[2]
    assert row.count("|") == 17  # 16 columns
    assert row.startswith("| tiny | ") and f"| {specimen['rome_best_layer']} |" in row


def test_ike_neighbours_kept_by_kind_pool_to_the_neighbourhood_score(scripts, tiny_model_dir):
    from workbench.core.cases import parse_cases
    from workbench.editing.editor import Editor
    from workbench.evaluation.runner import evaluate
    from workbench.model.handle import open_model
    from workbench.world.cases import export_edit_cases

    _, specimen_sweep, *_ = scripts
    handle = open_model(tiny_model_dir)
    records = export_edit_cases(handle.world, "test")[:6]
    cases = parse_cases(records)
    editor = Editor.for_model(handle, "ike")
    edits = {case.case_id: editor.edit_case(case) for case in cases}
    kept = specimen_sweep.neighbours_kept_by_kind(handle.bridge, edits, records)
    counts = {kind: sum(p["kind"] == kind for r in records for p in r["neighborhood_prompts"])
              for kind in specimen_sweep.NEIGHBOUR_KINDS}
    assert {kind: share["n"] for kind, share in kept.items()} == counts and sum(counts.values()) > 6
    # pooled over kinds, the shares are the neighbourhood score (its per-token comparison) that the
    # evaluation computes per case, weighted by each case's number of neighbours
    _, rows = evaluate(handle.bridge, cases, editor.edit_case, progress=False, fluency_tokens=0)
    n = [len(r["neighborhood_prompts"]) for r in records]
    expected = sum(row["metrics"]["neighborhood_score"] * k for row, k in zip(rows, n) if k) / sum(n)
    pooled = sum(s["mean"] * s["n"] for s in kept.values() if s["n"]) / sum(n)
    assert pooled == pytest.approx(expected, abs=1e-9)
    # without a context the model answers every neighbour from memory: the plain model's share
    plain = specimen_sweep.neighbours_kept_by_kind(
        handle.bridge, {case_id: dataclasses.replace(edit, context="") for case_id, edit in edits.items()}, records)
    assert all(share["mean"] >= 0.8 for share in plain.values() if share["n"])


def test_enrichment_check_reads_the_attributes_a_name_predicts(tmp_path, monkeypatch, capsys, scripts, tiny_world):
    _, _, enrichment_check, _ = scripts
    out = tmp_path / "enrichment.json"
    monkeypatch.setattr(sys, "argv", ["enrichment_check", "tiny", "--json", str(out)])
    enrichment_check.main()
    result = json.loads(out.read_text())["tiny"]
    mass = result["attribute_mass"]
    assert {split: m["n_subjects"] for split, m in mass.items()} == {
        split: sum(tiny_world.split_of(e.name) == split for e in tiny_world.subjects()) for split in ("train", "test")}
    # trained on relation phrasings, never on directory lines: a name is followed by relation words
    assert all(m["mass"] < 0.2 for m in mass.values())
    assert len(result["probe_mean_by_layer"]) == 4 and "mean" in capsys.readouterr().out


def test_checkpoints_travel_in_parts_and_come_back_rounded_to_bfloat16(tmp_path, scripts):
    import shutil

    import torch
    from safetensors.torch import load_file

    from workbench.model.presets import preset
    from workbench.model.store import shipped_model_dir

    *_, transfer = scripts
    run = tmp_path / "run"
    for name in ("a", "b"):
        shutil.copytree(shipped_model_dir(preset("tiny")), run / name)
    (run / "table.md").write_text("| variant |\n")
    parts = transfer.pack(run, tmp_path / "out", part_mib=0.5)
    assert len(parts) > 2 and all(p.stat().st_size <= 2**19 for p in parts)
    # the parts may arrive in two folders; the models come back in float32, rounded to bfloat16
    (tmp_path / "second").mkdir()
    for part in parts[2:]:
        part.rename(tmp_path / "second" / part.name)
    shutil.copy(tmp_path / "out" / transfer.DIGEST_FILE, tmp_path / "second")
    models = transfer.unpack([tmp_path / "out", tmp_path / "second"], tmp_path / "back")
    assert [m.name for m in models] == ["a", "b"] and (tmp_path / "back" / "table.md").exists()
    original, back = (load_file(d / "model.safetensors") for d in (run / "a", models[0]))
    assert back.keys() == original.keys()
    assert all(back[k].dtype == torch.float32 and torch.equal(back[k], original[k].to(torch.bfloat16).float())
               for k in original)
    assert any(not torch.equal(back[k], original[k]) for k in original)
    assert json.loads((models[0] / "training_report.json").read_text())["weights_transferred_as"] == "bfloat16"
    with pytest.raises(FileExistsError):
        transfer.unpack([tmp_path / "out", tmp_path / "second"], tmp_path / "back")
    with pytest.raises(ValueError, match="parts missing or repeated"):
        transfer.unpack([tmp_path / "second"], tmp_path / "tail")
    with pytest.raises(ValueError, match="do not match the digest: a part is missing"):
        transfer.unpack([tmp_path / "out"], tmp_path / "head")
    parts[0].write_bytes(parts[0].read_bytes()[:-1])
    with pytest.raises(ValueError, match="do not match the digest"):
        transfer.unpack([tmp_path / "out", tmp_path / "second"], tmp_path / "cut")


def test_a_gpu_round_sizes_its_steps_from_measured_speeds(scripts):
    import gpu_round  # importable while the scripts fixture puts analyses/ on the path

    from workbench.model.presets import preset

    # 500 s, 40 of them fixed, 0.1 s per step and 0.015 s of corpus per step: 4,000 steps
    assert gpu_round.sized_steps(500, 40, 0.1, 0.015) == 4000
    assert gpu_round.sized_steps(300, 40, 0.5, 0.1) == 433
    assert gpu_round.sized_steps(100, 90, 1.0, 0.1) == gpu_round.MIN_STEPS  # never fewer
    recipe = preset("tiny").with_overrides("timed", {"training": {"batch_size": 2, "warmup_steps": 1}})
    tokens_per_second, tokenizer = gpu_round.corpus_tokens_per_second(recipe, n_tokens=20_000)
    assert tokens_per_second > 1_000
    step = gpu_round.contended_step_seconds(recipe, tokenizer, 1, short=2, long=6)
    assert 0 < step < 5
