"""Batched generation and answer scoring."""

from __future__ import annotations

import pytest
import torch

from prism_core import generation

from .helpers import image

PROMPTS = ["In: What colour is it?\nOut:", "In: hi\nOut:", "In: Describe the image in one short sentence.\nOut:",
           "In: How many shapes are there?\nOut:"]
IMAGES = [0, None, 1, 2]


def _pixels(vlm, indices):
    return [None if i is None else vlm.image_transform(image(i)) for i in indices]


def test_batched_greedy_equals_row_by_row(vlm) -> None:
    kwargs = {"max_new_tokens": 6, "do_sample": False}
    batched = generation.generate_ids(vlm, _pixels(vlm, IMAGES), PROMPTS, **kwargs)
    for i, prompt in enumerate(PROMPTS):
        alone = generation.generate_ids(vlm, _pixels(vlm, [IMAGES[i]]), [prompt], **kwargs)
        assert batched[i, : alone.shape[1]].tolist() == alone[0].tolist(), f"row {i}"
    # Different prompts really give different continuations (the comparison above is not vacuous).
    assert len({tuple(r) for r in batched.tolist()}) > 1


def test_generate_batch_keeps_the_original_signature(vlm) -> None:
    pixels = torch.stack([vlm.image_transform(image(i)) for i in range(3)])
    texts = PROMPTS[:3]
    outputs = vlm.generate_batch(pixels, texts, do_sample=False, max_new_tokens=4)
    assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs)
    assert outputs[1] == vlm.generate(image(1), texts[1], do_sample=False, max_new_tokens=4)


def test_rows_stop_at_their_own_eos(vlm) -> None:
    free = generation.generate_ids(vlm, None, PROMPTS[:2], max_new_tokens=6, do_sample=False)
    # Make a token of row 0 that row 1 never produces (and row 0 not before it) the end of sequence.
    at, stop_token = next((i, t) for i, t in enumerate(free[0].tolist()[:5])
                          if i > 0 and t not in free[1].tolist() and t not in free[0].tolist()[:i])
    stopped = generation.generate_ids(vlm, None, PROMPTS[:2], max_new_tokens=6, do_sample=False,
                                      eos_token_id=stop_token)
    pad = vlm.tokenizer.pad_token_id
    assert stopped[0, :at + 1].tolist() == free[0, :at + 1].tolist()
    assert (stopped[0, at + 1:] == pad).all()
    assert stopped[1].tolist() == free[1].tolist()  # the other row runs on


def test_sampling_is_reproducible_under_a_seed_and_differs_from_greedy(vlm) -> None:
    def sample() -> list[str]:
        torch.manual_seed(5)
        return vlm.generate_batch(None, PROMPTS, do_sample=True, temperature=1.5, max_new_tokens=6)

    first = sample()
    assert first == sample()
    assert first != vlm.generate_batch(None, PROMPTS, do_sample=False, max_new_tokens=6)


def test_fused_backbone_generates_in_batch(fused_vlm) -> None:
    pixels = _pixels(fused_vlm, IMAGES)
    batched = generation.generate_ids(fused_vlm, pixels, PROMPTS, max_new_tokens=4, do_sample=False)
    alone = generation.generate_ids(fused_vlm, pixels[:1], PROMPTS[:1], max_new_tokens=4, do_sample=False)
    assert batched[0, : alone.shape[1]].tolist() == alone[0].tolist()


def _joint_probability(vlm, img, prompt: str, answer: str) -> float:
    """log p(answer | image, prompt) from a plain forward pass, for checking the scorer. The answer's ids are
    those it has after the prompt and the format's gap (" " for ``pure``), as training tokenizes answers."""
    tok = vlm.tokenizer
    prompt_ids = tok(prompt).input_ids
    answer_ids = tok(f"{prompt} {answer}").input_ids[len(prompt_ids):]
    ids = torch.tensor([prompt_ids + answer_ids])
    pixels = vlm.image_transform(img)[None]
    with torch.no_grad():
        logits = vlm(ids, torch.ones_like(ids, dtype=torch.bool), pixel_values=pixels).logits[0]
    offset = vlm.num_image_tokens + len(prompt_ids)
    log_probs = torch.log_softmax(logits.float(), -1)
    return float(sum(log_probs[offset - 1 + k, t] for k, t in enumerate(answer_ids)))


def test_scores_are_normalised_joint_probabilities_of_multi_token_candidates(vlm) -> None:
    candidates = ["True", "False", "no"]
    got = vlm.score(image(0), PROMPTS[0], candidates)
    expected = torch.softmax(torch.tensor([_joint_probability(vlm, image(0), PROMPTS[0], c) for c in candidates]), 0)
    torch.testing.assert_close(torch.tensor(got), expected, rtol=1e-4, atol=1e-5)
    assert sum(got) == pytest.approx(1.0, abs=1e-5)


def test_single_token_scoring_matches_teacher_forcing(vlm) -> None:
    # The fast path (one forward pass, next-token probabilities) against teacher forcing, for the same ids.
    pixels = torch.stack([vlm.image_transform(image(i)) for i in range(2)])
    prompt_ids = [vlm.tokenizer(p).input_ids for p in PROMPTS[:2]]
    ids = [[vlm.tokenizer(c, add_special_tokens=False).input_ids for c in "ABC"]] * 2
    with torch.no_grad():
        patches = vlm.embed_images(pixels)
        fast = generation._single_token_log_probs(vlm, prompt_ids, patches, torch.arange(2), ids)
        slow = generation._teacher_forced_log_probs(vlm, prompt_ids, patches, torch.arange(2), ids)
    torch.testing.assert_close(torch.softmax(fast, -1), torch.softmax(slow, -1), rtol=1e-4, atol=1e-5)
    assert not torch.equal(fast[0], fast[1])


def test_candidates_are_scored_as_training_tokenizes_answers(vlm) -> None:
    # pure's prompt ends at "Out:" and training writes " A" after it: with this byte-level tokenizer that is two
    # tokens, and the scorer must use them (the stand-alone "A" would be a token training never puts there).
    from prism_core.prompting import tokenize_conversation
    from prism_core.types import Turn

    ids, labels = tokenize_conversation(vlm.tokenizer, vlm.prompt_format, [Turn("human", "hi"), Turn("gpt", "A")])
    answer = [i for i, label in zip(ids, labels, strict=True) if label != -100][:-1]  # without </s>
    prompt_ids = vlm.tokenizer(PROMPTS[1]).input_ids
    assert generation._answer_ids(vlm, PROMPTS[1], prompt_ids, ["A"]) == [answer]
    assert len(answer) == 2


def test_mismatched_pixels_and_prompts_are_reported(vlm) -> None:
    pixels = torch.stack([vlm.image_transform(image(0))])
    with pytest.raises(ValueError, match="holds 1 images for 2 prompts"):
        vlm.generate_batch(pixels, PROMPTS[:2])
    with pytest.raises(TypeError, match="list of prompts"):
        vlm.generate_batch(pixels, PROMPTS[0])


def test_readme_usage_runs_unchanged(vlm) -> None:
    vlm.to("cpu", dtype=torch.bfloat16)
    prompt_builder = vlm.get_prompt_builder()
    prompt_builder.add_turn(role="human", message="What is going on in this image?")
    prompt_text = prompt_builder.get_prompt()
    assert prompt_text == "In: What is going on in this image?\nOut:"
    generated_text = vlm.generate(image(0), prompt_text, do_sample=True, temperature=0.4, max_new_tokens=8,
                                  min_length=1)
    assert isinstance(generated_text, str)


def test_eval_harness_pattern_dataloader_of_transformed_images(fused_vlm) -> None:
    # vlm-evaluation: image_transform → plain DataLoader batching (dict for fused) → generate_batch.
    from torch.utils.data import DataLoader

    transform = fused_vlm.vision_backbone.image_transform
    assert transform.is_prismatic
    loader = DataLoader([transform(image(i)) for i in range(4)], batch_size=4)
    pixels = next(iter(loader))
    assert isinstance(pixels, dict)
    answers = fused_vlm.generate_batch(pixels, PROMPTS, do_sample=False, max_new_tokens=3)
    assert len(answers) == 4
    probs = fused_vlm.generate_batch(pixels, PROMPTS, return_string_probabilities=["True", "False"])
    assert all(sum(p) == pytest.approx(1.0, abs=1e-5) for p in probs)
