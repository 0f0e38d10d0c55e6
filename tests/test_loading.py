"""Loading real architectures: tiny GPT-2, GPT-NeoX, GPT-J and Llama built from config."""

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTJConfig, GPTNeoXConfig, LlamaConfig

from tests.conftest import installed_hook_count, weights_equal, weights_snapshot
from workbench.core.edit import Edit, EditRequest, WeightDelta, commit
from workbench.core.sites import site_module
from workbench.model.architecture import ARCHITECTURES, mlp_output_site, plain_view
from workbench.model.loading import ModelLoadError, load_model, resolve_model

HOOKS = ("hook_embed", "blocks.{l}.hook_resid_pre", "blocks.{l}.hook_resid_post", "blocks.{l}.hook_attn_out",
         "blocks.{l}.hook_mlp_out", "blocks.{l}.mlp.hook_post", "blocks.{l}.attn.hook_z")
SEQUENTIAL_RESIDUAL = {"gpt2", "llama"}  # GPT-J and GPT-NeoX run attention and MLP in parallel: no resid_mid


def _configs(vocab_size):
    return {
        "gpt2": GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=vocab_size),
        "gpt_neox": GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, vocab_size=vocab_size),
        "gptj": GPTJConfig(n_layer=2, n_embd=32, n_head=2, rotary_dim=8, n_positions=64, vocab_size=vocab_size),
        "llama": LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                             intermediate_size=64, max_position_embeddings=64, vocab_size=vocab_size),
    }


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_bridge):
    tokenizer = tiny_bridge.tokenizer
    directories = {}
    for name, config in _configs(len(tokenizer)).items():
        torch.manual_seed(0)
        directory = tmp_path_factory.mktemp(name)
        AutoModelForCausalLM.from_config(config).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        directories[name] = directory
    return directories


def test_every_mapped_architecture_is_tested():
    assert set(ARCHITECTURES) == set(_configs(8))


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_local_models_boot_with_the_hook_names(saved_models, architecture):
    bridge = load_model(saved_models[architecture])
    tokens = torch.tensor([[0, 5, 6, 7, 8]])
    hooks = HOOKS + (("blocks.{l}.hook_resid_mid",) if architecture in SEQUENTIAL_RESIDUAL else ())
    names = [h.format(l=layer) for layer in range(2) for h in hooks]
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    assert set(names) <= set(cache.keys())
    assert cache["blocks.1.hook_resid_post"].shape == (1, 5, 32)
    assert cache["blocks.0.mlp.hook_post"].shape[-1] == bridge.cfg.d_mlp
    assert installed_hook_count(bridge) == 0


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_architecture_map_names_the_weight_that_maps_keys_to_mlp_output(saved_models, architecture):
    bridge = load_model(saved_models[architecture])
    site = mlp_output_site(bridge, 1)
    module = site_module(bridge, site)
    d_mlp, d_model = bridge.cfg.d_mlp, bridge.cfg.d_model
    expected_shape = (d_mlp, d_model) if site.orientation == "in out" else (d_model, d_mlp)
    assert tuple(module.weight.shape) == expected_shape
    _, cache = bridge.run_with_cache(torch.tensor([[0, 3, 9, 4]]), names_filter=[site.key_hook, site.output_hook])
    key, output = cache[site.key_hook], cache[site.output_hook]
    weight = module.weight if site.orientation == "in out" else module.weight.T
    reconstructed = key @ weight + (module.bias if module.bias is not None else 0)
    torch.testing.assert_close(reconstructed, output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_the_plain_view_runs_the_bridges_own_weights_without_its_hooks(saved_models, architecture):
    bridge = load_model(saved_models[architecture])
    plain = plain_view(bridge)
    tokens = torch.tensor([[0, 3, 9, 4, 7]])
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens).logits, bridge(tokens), atol=1e-4, rtol=1e-4)
        site = mlp_output_site(bridge, 0)
        assert plain.get_submodule(site.module).weight is site_module(bridge, site).weight  # shared, not copied
        committed = commit(bridge, [Edit(EditRequest("a b", "a", "c"), (WeightDelta.dense(
            site, torch.full((bridge.cfg.d_mlp, bridge.cfg.d_model), 0.01)),), "ft")])
        try:
            torch.testing.assert_close(plain(tokens).logits, bridge(tokens), atol=1e-4, rtol=1e-4)
        finally:
            committed.revert()
        with bridge.hooks(fwd_hooks=[(site.output_hook, lambda output, hook: 3.0 * output)]):
            hooked = bridge(tokens)
        assert not torch.allclose(plain(tokens).logits, hooked, atol=1e-3)  # the bridge's hooks do not apply
    assert installed_hook_count(bridge) == 0


def test_layer_out_of_range_is_refused(tiny_bridge):
    with pytest.raises(ValueError, match="layer must be an integer"):
        mlp_output_site(tiny_bridge, tiny_bridge.cfg.n_layers)


def test_bridge_matches_the_hugging_face_model(tiny_model_dir, tiny_bridge):
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True, attn_implementation="eager")
    tokens = torch.tensor([[0, 11, 12, 13, 14, 15]])
    with torch.no_grad():
        torch.testing.assert_close(tiny_bridge(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)


def test_bad_model_references_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "missing-model"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(tmp_path)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="local model directory"):
        load_model("workbench-test/no-such-model")


def _copy_of_the_tiny_model(tiny_model_dir, tmp_path):
    import shutil

    return shutil.copytree(tiny_model_dir, tmp_path / "tiny-copy")


def test_a_damaged_workbench_model_directory_is_named_not_loaded(tiny_model_dir, tmp_path):
    copy = _copy_of_the_tiny_model(tiny_model_dir, tmp_path)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-5] ^= 0xFF  # one flipped byte in the last weight: it would load silently
    (copy / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ModelLoadError, match="SHA-256 not the one its manifest records: model.safetensors"):
        load_model(copy)


def test_unreadable_model_and_world_files_are_clear_errors(tiny_model_dir, tmp_path):
    from workbench.model.loading import load_world

    copy = _copy_of_the_tiny_model(tiny_model_dir, tmp_path)
    (copy / "workbench.json").unlink()  # a plain directory: no manifest to check against
    (copy / "world.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="world.json is not a readable fact world"):
        load_world(copy)
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=f"could not load the model in {copy}"):
        load_model(copy)


def test_a_mistyped_preset_is_named_at_once_not_tried_on_the_hub():
    with pytest.raises(ModelLoadError, match=r"no model 'TINY': the presets are \['default', 'tiny'\]"):
        resolve_model("TINY")


def test_a_directory_with_a_bad_config_or_no_weights_is_one_clear_error(tiny_model_dir, tmp_path):
    import shutil

    (tmp_path / "bad-config").mkdir()
    (tmp_path / "bad-config" / "config.json").write_text("{not json")
    (tmp_path / "no-weights").mkdir()
    shutil.copyfile(tiny_model_dir / "config.json", tmp_path / "no-weights" / "config.json")
    for name, detail in (("bad-config", "not a valid JSON file"), ("no-weights", "no file named model.safetensors")):
        with pytest.raises(ModelLoadError, match=f"could not load the model in {tmp_path / name}: .*{detail}"):
            load_model(tmp_path / name)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_a_bf16_model_of_every_architecture_is_edited_with_the_maths_in_fp32(saved_models, tiny_world, architecture):
    import dataclasses

    from workbench.editing.editor import Editor
    from workbench.editing.hparams import RomeHparams
    from workbench.world.cases import load_edit_cases

    bridge = load_model(saved_models[architecture], dtype="bf16")
    assert bridge.W_E.dtype == torch.bfloat16
    request = load_edit_cases(None, tiny_world)[0].request
    snapshot = weights_snapshot(bridge)
    hparams = dataclasses.replace(RomeHparams(), layer=0, v_steps=3, key_stats_tokens=1024)
    edit = Editor(bridge, "rome", hparams, facts=tiny_world)(request)
    [delta] = edit.deltas
    assert delta.left.dtype == delta.right.dtype == torch.float32 and torch.isfinite(delta.matrix()).all()
    tokens = torch.tensor([bridge.tokenizer(request.prompt)["input_ids"]])
    with torch.no_grad():
        plain = bridge(tokens)
        with edit.applied(bridge):
            edited = bridge(tokens)
    assert edited.dtype == torch.bfloat16 and not torch.equal(plain, edited)
    assert weights_equal(bridge, snapshot) and installed_hook_count(bridge) == 0
