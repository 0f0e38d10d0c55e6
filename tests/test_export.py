"""Export of an edited model: a new directory that behaves like the hooked edit; the base untouched."""

import hashlib
import json
import os

import pytest
import torch

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.app.cli import main
from workbench.core.edit import Edit, EditRequest, WeightDelta, applied_edits
from workbench.editing.export import EDITS_FILE, export_edited_model
from workbench.model.architecture import mlp_output_site
from workbench.model.loading import load_model, load_world

REQUEST = EditRequest("Karo Velin was born in", "Karo Velin", "Dusmor")
TOKENS = torch.tensor([[0, 11, 12, 13, 14, 15, 16]])


def _digest(directory):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())
            if path.is_file()}


@torch.no_grad()
def test_exported_model_matches_the_hooked_edit_and_the_base_is_untouched(tmp_path, tiny_model_dir, tiny_bridge):
    generator = torch.Generator().manual_seed(0)
    edits = [Edit(REQUEST, (WeightDelta.rank_one(mlp_output_site(tiny_bridge, layer),
                                                 torch.randn(tiny_bridge.cfg.d_mlp, generator=generator),
                                                 torch.randn(tiny_bridge.cfg.d_model, generator=generator) * 0.1),),
                  method="test") for layer in (0, 2)]
    base_files, snapshot = _digest(tiny_model_dir), weights_snapshot(tiny_bridge)
    out = export_edited_model(tiny_model_dir, edits, tmp_path / "edited")
    assert _digest(tiny_model_dir) == base_files and weights_equal(tiny_bridge, snapshot)
    with applied_edits(tiny_bridge, edits):
        hooked = tiny_bridge(TOKENS)
    exported = load_model(out)
    torch.testing.assert_close(exported(TOKENS), hooked, atol=1e-5, rtol=1e-5)
    assert (hooked - tiny_bridge(TOKENS)).abs().max() > 1e-4
    manifest = json.loads((out / EDITS_FILE).read_text())
    assert [e["layers"] for e in manifest["edits"]] == [[0], [2]]
    assert load_world(out) is not None and installed_hook_count(tiny_bridge) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not safetensors' private 0600
    with pytest.raises(FileExistsError, match="new directory only"):
        export_edited_model(tiny_model_dir, edits, out)
    with pytest.raises(ValueError, match="no edits"):
        export_edited_model(tiny_model_dir, [], tmp_path / "empty")


def test_edit_command_exports_and_refuses_an_existing_directory_before_editing(tmp_path, capsys, tiny_world):
    from workbench.world import export_edit_cases

    case = next(c for c in export_edit_cases(tiny_world, "test") if c["subject_kind"] == "person")
    args = ["edit", "--method", "ft", "--model", "tiny", "--prompt", case["prompt"], "--subject", case["subject"],
            "--target-new", case["target_new"], "--layer", "0", "--export", str(tmp_path / "edited")]
    assert main(args) == 0
    assert "edited model written to" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "edited" / EDITS_FILE).read_text())
    assert manifest["edits"][0]["request"]["target_new"] == case["target_new"]
    assert main(args) == 2 and "new directory only" in capsys.readouterr().err
