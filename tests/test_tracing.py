"""Causal tracing: the batched grid equals a per-cell reference loop, and the locator reads it."""

import numpy as np
import pytest
import torch

from tests.conftest import installed_hook_count
from workbench.core.cases import parse_cases
from workbench.core.sites import stream_hook
from workbench.model.tokens import encode_prompt, encode_target, subject_token_span
from workbench.tracing.average import average_trace, known_facts
from workbench.tracing.cases import facts_from_cases
from workbench.tracing.groups import TOKEN_GROUPS, grouped, token_groups
from workbench.tracing.locator import locate_from_effects, locate_from_trace
from workbench.tracing.plots import plot_average, plot_trace
from workbench.tracing.trace import (
    TraceConfig,
    embedding_noise,
    layer_window,
    trace_fact,
    whole_subject_restorations,
)
from workbench.world import export_edit_cases

CONFIG = TraceConfig(samples=2, window=2, row_budget=37)


@pytest.fixture(scope="module")
def fact(tiny_world):
    case = next(c for c in export_edit_cases(tiny_world, "test") if c["relation"] == "born_in")
    return case["prompt"], case["subject"], case["ground_truth"]


@pytest.fixture(scope="module")
def traced(tiny_bridge, fact):
    return trace_fact(tiny_bridge, *fact, CONFIG, torch.Generator().manual_seed(3))


@torch.no_grad()
def reference_grid(model, prompt, subject, answer, kind, config, seed):
    """One forward pass per (cell, noise sample): the slow, obvious implementation."""
    tokenizer = model.tokenizer
    tokens = torch.tensor([encode_prompt(tokenizer, prompt)])
    start, end = subject_token_span(tokenizer, prompt, subject)
    noise, _ = embedding_noise(model, config.samples, end - start, config.noise_scale,
                               torch.Generator().manual_seed(seed))
    answer_token = encode_target(tokenizer, answer)[0]
    _, cache = model.run_with_cache(tokens)
    n_layers, width = model.cfg.n_layers, 1 if kind == "resid" else config.window
    grid = np.zeros((tokens.shape[1], n_layers))
    for position in range(tokens.shape[1]):
        for layer in range(n_layers):
            total = 0.0
            for sample in range(config.samples):
                def corrupt(embed, hook, sample=sample):
                    embed[:, start:end] += noise[sample]
                    return embed

                hooks = [("hook_embed", corrupt)]
                for restored in layer_window(layer, width, n_layers):
                    name = stream_hook(kind, restored)

                    def restore(act, hook, name=name, position=position):
                        act[:, position] = cache[name][:, position]
                        return act
                    hooks.append((name, restore))
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
                total += logits[0, -1].softmax(-1)[answer_token].item()
            grid[position, layer] = total / config.samples
    return grid


@pytest.mark.parametrize("kind", ["resid", "mlp", "attn"])
def test_batched_grid_equals_per_cell_loop(tiny_bridge, fact, traced, kind):
    expected = reference_grid(tiny_bridge, *fact, kind, CONFIG, seed=3)
    np.testing.assert_allclose(traced.grids[kind], expected, atol=1e-5)
    assert installed_hook_count(tiny_bridge) == 0


@torch.no_grad()
def test_whole_subject_restorations_equal_a_per_sample_loop(tiny_bridge, fact, traced):
    prompt, subject, answer = fact
    clean, corrupted, restored = whole_subject_restorations(tiny_bridge, prompt, subject, answer, CONFIG,
                                                            torch.Generator().manual_seed(3))
    assert clean == pytest.approx(traced.clean_prob) and corrupted == pytest.approx(traced.corrupted_prob)
    tokens = torch.tensor([encode_prompt(tiny_bridge.tokenizer, prompt)])
    start, end = subject_token_span(tiny_bridge.tokenizer, prompt, subject)
    noise, _ = embedding_noise(tiny_bridge, CONFIG.samples, end - start, CONFIG.noise_scale,
                               torch.Generator().manual_seed(3))
    answer_token = encode_target(tiny_bridge.tokenizer, answer)[0]
    _, cache = tiny_bridge.run_with_cache(tokens)
    for layer in range(tiny_bridge.cfg.n_layers):
        name = stream_hook("resid", layer)
        total = 0.0
        for sample in range(CONFIG.samples):
            def corrupt(embed, hook, sample=sample):
                embed[:, start:end] += noise[sample]
                return embed

            def restore(act, hook, name=name):
                act[:, start:end] = cache[name][:, start:end]
                return act
            logits = tiny_bridge.run_with_hooks(tokens, fwd_hooks=[("hook_embed", corrupt), (name, restore)])
            total += logits[0, -1].softmax(-1)[answer_token].item()
        assert restored[layer] == pytest.approx(total / CONFIG.samples, abs=1e-5)
    # after the last layer, subject positions no longer reach the prediction at the last token
    assert restored[-1] == pytest.approx(corrupted, abs=1e-6)
    assert installed_hook_count(tiny_bridge) == 0


def test_trace_shapes_and_probabilities(tiny_bridge, traced, fact):
    prompt, subject, answer = fact
    n_tokens = len(encode_prompt(tiny_bridge.tokenizer, prompt))
    assert traced.tokens[traced.subject_span[0]:traced.subject_span[1]]
    assert all(grid.shape == (n_tokens, tiny_bridge.cfg.n_layers) for grid in traced.grids.values())
    assert traced.clean_prob > 0.5 and traced.corrupted_prob < traced.clean_prob - 0.1  # noise hides the fact
    # restoring the whole residual stream at the last position of the last layer gives the clean run back
    assert traced.grids["resid"][-1, -1] == pytest.approx(traced.clean_prob, abs=1e-5)
    # restoring anything before the subject changes nothing: those states are not corrupted
    assert traced.grids["resid"][0] == pytest.approx(np.full(tiny_bridge.cfg.n_layers, traced.corrupted_prob), abs=1e-5)


def test_answer_defaults_to_the_models_prediction(tiny_bridge, fact):
    prompt, subject, answer = fact
    result = trace_fact(tiny_bridge, prompt, subject, config=TraceConfig(samples=1, kinds=("resid",)))
    assert result.answer_token == encode_target(tiny_bridge.tokenizer, answer)[0]


def test_layer_windows_are_centred_and_clipped():
    assert list(layer_window(0, 10, 8)) == list(range(0, 5))
    assert list(layer_window(5, 4, 8)) == [3, 4, 5, 6]
    assert list(layer_window(7, 1, 8)) == [7]


def test_token_groups_partition_subject_and_following_tokens():
    groups = token_groups(10, (2, 6))
    assert groups == {"first subject token": [2], "middle subject tokens": [3, 4], "last subject token": [5],
                      "first subsequent token": [6], "further tokens": [7, 8], "last token": [9]}
    grid = np.arange(20.0).reshape(10, 2)
    assert grouped(grid, (2, 6))[TOKEN_GROUPS.index("middle subject tokens")].tolist() == [7.0, 8.0]
    assert np.isnan(grouped(grid, (2, 3))[TOKEN_GROUPS.index("middle subject tokens")]).all()


def test_locator_picks_the_strongest_last_subject_layer(tiny_bridge):
    effects = np.zeros((len(TOKEN_GROUPS), tiny_bridge.cfg.n_layers))
    effects[TOKEN_GROUPS.index("last subject token"), 2] = 0.4
    effects[TOKEN_GROUPS.index("last token"), 3] = 0.5
    location = locate_from_effects(tiny_bridge, effects)
    assert location.site.layer == 2 and location.site.key_hook == "blocks.2.mlp.hook_post"
    assert location.site.module == "transformer.h.2.mlp.c_proj"
    assert (location.strongest_group, location.strongest_layer) == ("last token", 3)
    assert location.last_subject_share == pytest.approx(0.8) and location.warning is None
    effects[TOKEN_GROUPS.index("last subject token"), 2] = 0.1
    assert "little of the MLP effect" in locate_from_effects(tiny_bridge, effects).warning


def test_locator_from_a_trace_and_plots(tiny_bridge, traced, tmp_path):
    location = locate_from_trace(tiny_bridge, traced)
    assert 0 <= location.site.layer < tiny_bridge.cfg.n_layers
    written = plot_trace(traced, tmp_path / "trace.png")
    assert [p.suffix for p in written] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in written)


def test_average_trace_over_known_facts(tiny_bridge, tiny_world, tmp_path):
    facts = facts_from_cases(parse_cases(export_edit_cases(tiny_world, "test")))
    known = known_facts(tiny_bridge, facts)
    assert 0 < len(known) <= len(facts)
    average = average_trace(tiny_bridge, facts, n=3, config=TraceConfig(samples=2, window=2), progress=False)
    assert average.n_facts == 3 and average.effects["mlp"].shape == (len(TOKEN_GROUPS), tiny_bridge.cfg.n_layers)
    assert average.group_counts[TOKEN_GROUPS.index("last token")] == 3
    assert plot_average(average, tmp_path / "average.png")[0].stat().st_size > 1000


def test_bad_trace_inputs_give_clear_errors(tiny_bridge):
    with pytest.raises(ValueError, match="does not occur in prompt"):
        trace_fact(tiny_bridge, "Somebody was born in", "Nobody Known")
    with pytest.raises(ValueError, match="kinds"):
        TraceConfig(kinds=("mlp", "embeddings"))
    assert installed_hook_count(tiny_bridge) == 0


def test_benchmark_grids_agree_with_transformer_lens_patching(tiny_bridge, fact):
    from workbench.app.trace_bench import bench_tracing

    result = bench_tracing(tiny_bridge, *fact, config=TraceConfig(samples=2, window=2), repeats=1)
    assert result["max_abs_difference"] < 1e-5
    assert result["trace_rows"] == 2 * 3 * result["resid_cells"]
    assert result["speedup_vs_patching"] > 0 and result["throughput_vs_forward"] > 0
    assert installed_hook_count(tiny_bridge) == 0
