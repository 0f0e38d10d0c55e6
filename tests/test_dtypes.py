"""Models loaded in bf16 and fp16 on the CPU: tracing, editing and evaluation work, the edit maths
stays in fp32, and tracing sizes its batches by the free memory."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import weights_equal, weights_snapshot
from workbench.editing.editor import Editor
from workbench.evaluation.metrics import measure
from workbench.model import memory
from workbench.model.handle import open_model
from workbench.model.loading import ModelLoadError, dtype_named
from workbench.tracing.trace import TraceConfig, trace_fact
from workbench.world.cases import load_edit_cases


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_a_half_precision_model_is_traced_and_edited_with_the_edit_maths_in_fp32(tiny_model_dir, dtype):
    handle = open_model(tiny_model_dir, dtype=dtype)
    model = handle.bridge
    assert model.cfg.dtype == dtype_named(dtype) and model.W_E.dtype == dtype_named(dtype)
    case = load_edit_cases(None, handle.world)[0]
    traced = trace_fact(model, case.request.prompt, case.request.subject, None, TraceConfig(samples=2, window=2))
    assert traced.clean_prob > 0.5 and traced.grids["mlp"].max() > traced.corrupted_prob

    snapshot = weights_snapshot(model)
    for method in ("rome", "ft-l"):
        edit = Editor.for_model(handle, method).edit_case(case)
        assert all(d.left.dtype == d.right.dtype == torch.float32 for d in edit.deltas)
        with edit.applied(model):
            after = measure(model, case, fluency_tokens=0)
        assert after.edit_new > after.edit_true, method  # the edit works in this dtype
        assert weights_equal(model, snapshot)


def test_tracing_batches_are_sized_by_free_memory(tiny_bridge, monkeypatch):
    one_row = memory.row_bytes(tiny_bridge.cfg, 12)
    assert one_row > 12 * 4 * tiny_bridge.cfg.d_vocab  # at least the fp32 logits
    monkeypatch.setattr(memory, "free_bytes", lambda device: 20 * one_row)
    assert memory.rows_that_fit(tiny_bridge, 12) == 10  # half of what is free
    monkeypatch.setattr(memory, "free_bytes", lambda device: 0)
    assert memory.rows_that_fit(tiny_bridge, 12) == 1
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10**15)
    assert memory.rows_that_fit(tiny_bridge, 12) == memory.MAX_ROWS["cpu"]


def test_an_unknown_dtype_or_a_missing_device_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        open_model(tiny_model_dir, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="sees no CUDA GPU"):
            open_model(tiny_model_dir, device="cuda")
    with pytest.raises(ModelLoadError, match="unknown device"):
        open_model(tiny_model_dir, device="tpu:x")


def test_bench_scale_measures_models_built_from_config_with_random_weights():
    from workbench.app.scale_bench import bench_scale
    from workbench.model.presets import preset
    from workbench.world import build_world

    world = build_world(preset("tiny").world)
    cases = load_edit_cases(None, world)[:2]
    result = bench_scale(["tiny-gpt2", "tiny-llama"], cases, world, device="cpu", dtype="bf16", key_tokens=4096)
    assert result["dtype"] == "bf16" and result["key_tokens"] == 4096
    for size, layers in (("tiny-gpt2", 4), ("tiny-llama", 4)):
        row = result["sizes"][size]
        assert row["layers"] == layers and row["parameters"] > 2_000_000  # the real vocabularies' embeddings
        assert row["trace"]["speedup_vs_patching"] > 1 and row["trace"]["max_abs_difference"] < 0.05
        assert row["key_statistics_s"] > 0 and row["rome_edit_s"] > 0 and row["mend_edit_s"] > 0
        assert row["eval_cases_per_s"] > 0
    with pytest.raises(ValueError, match="unknown sizes"):
        bench_scale(["gpt-5"], cases, world, device="cpu")
