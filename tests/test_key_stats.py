"""Key statistics: the right numbers, cached by what they depend on, never trusted when damaged."""

import os

import pytest
import torch

from workbench.core.edit import Edit, EditRequest, WeightDelta, commit
from workbench.core.fingerprint import model_fingerprint
from workbench.editing import key_stats
from workbench.model.architecture import mlp_output_site
from workbench.world import CorpusConfig, corpus_rounds


@pytest.fixture(scope="module")
def texts(tiny_world):
    return next(corpus_rounds(tiny_world, CorpusConfig(), set()))[:40]


def test_second_moment_equals_the_mean_outer_product_of_keys(tiny_bridge, texts):
    windows = key_stats.key_windows(tiny_bridge.tokenizer, texts, 32)[:3]
    _, cache = tiny_bridge.run_with_cache(windows, names_filter=["blocks.1.mlp.hook_post"])
    keys = cache["blocks.1.mlp.hook_post"].reshape(-1, tiny_bridge.cfg.d_mlp).double()
    n = keys.shape[0] - 5  # stop in the middle of a batch
    expected = (keys[:n].T @ keys[:n] / n).float()
    moment = key_stats.compute_key_second_moment(tiny_bridge, 1, texts, n, window=32, batch_size=2, progress=False)
    torch.testing.assert_close(moment, expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(moment, moment.T)


def test_cache_is_keyed_reused_and_recomputed_when_damaged(tiny_bridge, texts, tmp_path, monkeypatch):
    calls = []
    compute = key_stats.compute_key_second_moment

    def counting(*args, **kwargs):
        calls.append(args[1])
        return compute(*args, **kwargs)

    monkeypatch.setattr(key_stats, "compute_key_second_moment", counting)
    first = key_stats.key_second_moment(tiny_bridge, 2, texts, 500, progress=False, cache_dir=tmp_path)
    again = key_stats.key_second_moment(tiny_bridge, 2, texts, 500, progress=False, cache_dir=tmp_path)
    assert torch.equal(first, again) and len(calls) == 1
    key_stats.key_second_moment(tiny_bridge, 3, texts, 500, progress=False, cache_dir=tmp_path)
    key_stats.key_second_moment(tiny_bridge, 2, texts[:20], 500, progress=False, cache_dir=tmp_path)
    assert len(calls) == 3  # another layer and another corpus are other entries
    for path in tmp_path.iterdir():
        path.write_bytes(b"not a tensor file")
    repaired = key_stats.key_second_moment(tiny_bridge, 2, texts, 500, progress=False, cache_dir=tmp_path)
    assert len(calls) == 4 and torch.equal(repaired, first)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging file left
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in tmp_path.iterdir())  # not mkstemp's 0600


def test_fingerprint_changes_with_any_weight(tiny_bridge):
    before = model_fingerprint(tiny_bridge)
    site = mlp_output_site(tiny_bridge, 0)
    delta = WeightDelta.rank_one(site, torch.ones(tiny_bridge.cfg.d_mlp), torch.ones(tiny_bridge.cfg.d_model) * 1e-3)
    handle = commit(tiny_bridge, [Edit(EditRequest("a b c", "b", "d"), (delta,), method="test")])
    try:
        assert model_fingerprint(tiny_bridge) != before
    finally:
        handle.revert()
    assert model_fingerprint(tiny_bridge) == before


def test_fingerprint_is_the_same_for_the_same_files_in_another_directory(tiny_bridge, tiny_model_dir, tmp_path):
    import shutil

    from workbench.model.loading import load_model

    copy = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere")
    assert model_fingerprint(load_model(copy)) == model_fingerprint(tiny_bridge)


def test_too_little_text_is_a_clear_error(tiny_bridge):
    with pytest.raises(ValueError, match="fewer than 128 tokens"):
        key_stats.compute_key_second_moment(tiny_bridge, 0, ["a short text"], 10, progress=False)



def test_statistics_and_embeddings_taken_under_a_sessions_edit_are_the_clean_ones(tiny_bridge, tiny_world, texts,
                                                                                 tmp_path, monkeypatch):
    """Session A computes a ROME statistic and IKE's pool embeddings while its FT edit is applied
    through hooks; session B and a fresh command must get what the unedited model gives."""
    from workbench.editing.finetune import compute_finetune_edit
    from workbench.editing.hparams import FinetuneHparams, IkeHparams
    from workbench.editing.ike import DemonstrationRetriever, sentence_embeddings

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    fact = next(f for f in tiny_world.facts if f.relation == "born_in")
    other = next(o for o in tiny_world.objects_of_relation("born_in") if o != fact.object)
    request = EditRequest(f"{fact.subject} was born in", fact.subject, other, fact.object)
    session_edit = compute_finetune_edit(tiny_bridge, request, FinetuneHparams(layer=0, steps=5, lr=5e-2))
    n_tokens = 4 * 128  # four windows of the default width
    clean = key_stats.compute_key_second_moment(tiny_bridge, 2, texts, n_tokens, progress=False)
    with session_edit.applied(tiny_bridge):
        _, cache = tiny_bridge.run_with_cache(key_stats.key_windows(tiny_bridge.tokenizer, texts, 128)[:4],
                                              names_filter=["blocks.2.mlp.hook_post"])
        moment_a = key_stats.key_second_moment(tiny_bridge, 2, texts, n_tokens, progress=False)
        retriever = DemonstrationRetriever(tiny_bridge, tiny_world, IkeHparams())
        retriever.nearest(request, 2)
    keys = cache["blocks.2.mlp.hook_post"].reshape(-1, tiny_bridge.cfg.d_mlp).double()
    under_edit = (keys.T @ keys / keys.shape[0]).float()
    assert (under_edit - clean).norm() / clean.norm() > 0.01  # the edit does change what the keys say
    torch.testing.assert_close(moment_a, clean)
    moment_b = key_stats.key_second_moment(tiny_bridge, 2, texts, n_tokens, progress=False)  # the disk cache
    torch.testing.assert_close(moment_b, clean)
    pool = sentence_embeddings(tiny_bridge, [entry.new_fact for entry in retriever.pool])
    torch.testing.assert_close(retriever._embeddings, pool)


def test_a_corpus_shorter_than_the_count_asked_for_says_so(tiny_bridge, texts):
    windows = key_stats.key_windows(tiny_bridge.tokenizer, texts[:20], 32)
    available = windows.numel()
    with pytest.warns(UserWarning, match=f"holds {available} keys .* fewer than the {available + 1000} asked for"):
        key_stats.compute_key_second_moment(tiny_bridge, 0, texts[:20], available + 1000, window=32, progress=False)


def test_a_cached_statistic_that_changed_since_it_was_written_is_recomputed(tiny_bridge, texts, tmp_path,
                                                                            monkeypatch):
    first = key_stats.key_second_moment(tiny_bridge, 1, texts, 500, progress=False, cache_dir=tmp_path)
    [path] = list(tmp_path.iterdir())
    stored = torch.load(path, weights_only=True)
    stored["moment"][0, 0] += 1.0  # a flipped value: the file still loads, the recorded digest no longer fits
    torch.save(stored, path)
    calls = []
    compute = key_stats.compute_key_second_moment
    monkeypatch.setattr(key_stats, "compute_key_second_moment", lambda *a, **k: calls.append(1) or compute(*a, **k))
    again = key_stats.key_second_moment(tiny_bridge, 1, texts, 500, progress=False, cache_dir=tmp_path)
    assert calls == [1] and torch.equal(again, first)
