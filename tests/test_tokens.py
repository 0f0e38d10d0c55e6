import pytest
import torch

from tests.conftest import installed_hook_count
from workbench.model.tokens import (
    context_length,
    encode_prompt,
    encode_target,
    score_targets,
    subject_token_span,
    top_next_tokens,
)


def _subject_text(tokenizer, prompt, span, prepend_bos=True):
    ids = encode_prompt(tokenizer, prompt, prepend_bos)
    return tokenizer.decode(ids[span[0]:span[1]])


@pytest.mark.parametrize("prompt,subject", [
    ("Karo Velin was born in", "Karo Velin"),
    ("The birthplace of Karo Velin is", "Karo Velin"),
    ("In the evenings Karo Velin plays the", "Karo Velin"),
    ("Karo Velin's native language is", "Karo Velin"),
    ("The birthplace of Karo Velin is", " Karo Velin"),
])
def test_subject_span_covers_exactly_the_subject(tiny_bridge, prompt, subject):
    tokenizer = tiny_bridge.tokenizer
    span = subject_token_span(tokenizer, prompt, subject)
    assert _subject_text(tokenizer, prompt, span).strip() == subject.strip()
    assert span[0] >= 1  # the BOS token comes first
    no_bos = subject_token_span(tokenizer, prompt, subject, prepend_bos=False)
    assert no_bos == (span[0] - 1, span[1] - 1)


def test_subject_span_uses_the_last_occurrence(tiny_bridge):
    prompt = "Karo Velin works as a pilot. Karo Velin was born in"
    start, end = subject_token_span(tiny_bridge.tokenizer, prompt, "Karo Velin")
    assert start == len(encode_prompt(tiny_bridge.tokenizer, "Karo Velin works as a pilot."))
    assert _subject_text(tiny_bridge.tokenizer, prompt, (start, end)).strip() == "Karo Velin"


def test_missing_subject_and_empty_target_give_clear_errors(tiny_bridge):
    with pytest.raises(ValueError, match="does not occur in prompt"):
        subject_token_span(tiny_bridge.tokenizer, "Karo Velin was born in", "Mira Oss")
    with pytest.raises(ValueError, match="non-empty"):
        subject_token_span(tiny_bridge.tokenizer, "Karo Velin was born in", "  ")
    with pytest.raises(ValueError, match="non-empty"):
        encode_target(tiny_bridge.tokenizer, "")
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        score_targets(tiny_bridge, tiny_bridge.tokenizer, ["a", "b"], ["c"])
    too_long = " ".join(["Karo Velin was born in"] * tiny_bridge.cfg.n_ctx)
    with pytest.raises(ValueError, match=f"longer than the model's context of {tiny_bridge.cfg.n_ctx} tokens"):
        score_targets(tiny_bridge, tiny_bridge.tokenizer, [too_long], ["Vassa"])
    assert context_length(tiny_bridge.original_model) == tiny_bridge.cfg.n_ctx  # a Hugging Face model's too


def test_target_is_encoded_as_a_continuation(tiny_bridge):
    tokenizer = tiny_bridge.tokenizer
    prompt, target = "Karo Velin was born in", "Dusmor"
    joint = encode_prompt(tokenizer, prompt + " " + target)
    assert joint == encode_prompt(tokenizer, prompt) + encode_target(tokenizer, target)


def test_batched_scores_equal_one_prompt_at_a_time(tiny_bridge, tiny_world):
    tokenizer = tiny_bridge.tokenizer
    facts = tiny_world.facts[:9]
    from workbench.world import relation

    prompts = [relation(f.relation).corpus[0].format(f.subject) for f in facts]
    targets = [f.object for f in facts]
    batched = score_targets(tiny_bridge, tokenizer, prompts, targets, batch_size=4)
    for i, (prompt, target) in enumerate(zip(prompts, targets)):
        p, t = encode_prompt(tokenizer, prompt), encode_target(tokenizer, target)
        with torch.no_grad():
            log_probs = tiny_bridge(torch.tensor([p + t]))[0].log_softmax(-1)
        expected = sum(log_probs[len(p) - 1 + j, tok].item() for j, tok in enumerate(t))
        assert batched.log_prob[i].item() == pytest.approx(expected, abs=1e-4)
        assert batched.first_token_is_top1[i].item() == (log_probs[len(p) - 1].argmax().item() == t[0])
        hits = [log_probs[len(p) - 1 + j].argmax().item() == tok for j, tok in enumerate(t)]
        assert batched.token_accuracy[i].item() == pytest.approx(sum(hits) / len(hits))
    assert installed_hook_count(tiny_bridge) == 0


def test_top_next_tokens_are_sorted_probabilities(tiny_bridge):
    top = top_next_tokens(tiny_bridge, tiny_bridge.tokenizer, "The capital of", k=5)
    probabilities = [p for _, p in top]
    assert len(top) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6
