"""TRI-ML/vlm-evaluation's Prismatic adapter (vlm_eval/models/prismatic.py) drives a model through the original API
in a fixed sequence: ``load(run_dir_or_id, hf_token=)``, ``.to(device, dtype=)``, the tokenizer and image transform
off the backbones, ``get_prompt_builder(system_prompt)`` + ``add_turn(role=, message=)`` + ``get_prompt()`` per task,
then ``generate_batch(pixels, prompts, return_string_probabilities, **generate_kwargs)`` and ``generate(...)``.
The same sequence runs here unchanged against a saved prism model (real tiny plugins)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import prism_core
from prism_core.composition import compose

# The adapter's task prompts (its suffix strings), one per prompt style it has.
QUESTION = "What colour is the square?"
TASK_MESSAGES = {
    "vqa": f"\n{QUESTION}\nAnswer the question using a single word or phrase.",
    "vizwiz": f"\n{QUESTION}\nWhen the provided information is insufficient, respond with 'Unanswerable'."
              "\nAnswer the question using a single word or phrase.",
    "true-false": '\nBased on the image, is this statement "True" or "False"? The square is red.'
                  '\nRespond with "True" or "False" directly.',
    "multiple-choice": f"\n{QUESTION}\nA. red\nB. blue"
                       "\nAnswer with the option's letter from the given choices directly.",
    "refer": '\nPlease provide the bounding box coordinate of the region this sentence describes: "the square"',
    "caption": "\nProvide a short image description.",
}


@pytest.fixture(scope="module", params=["llama2-pure", "vicuna"])
def run_dir(request, tmp_path_factory):
    prompt_format = {"kind": "vicuna-v1.5"} if request.param == "vicuna" else None
    vlm = compose({"kind": "siglip", "preset": "siglip-tiny"}, {"kind": "gelu-mlp"},
                  {"kind": "llama2", "preset": "llama-tiny"}, prompt_format=prompt_format, seed=3)
    return prism_core.save(vlm, tmp_path_factory.mktemp("eval") / request.param)


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (50 + 7 * i, 40), (40 * i, 200, 90)) for i in range(n)]


def test_the_adapters_call_sequence_runs_unchanged(run_dir):
    # PrismaticVLM.load
    vlm = prism_core.load(run_dir, hf_token=None)
    vlm.to("cpu", dtype=torch.float32)
    tokenizer, image_transform = vlm.llm_backbone.tokenizer, vlm.vision_backbone.image_transform
    assert tokenizer.pad_token_id is not None and image_transform.is_prismatic

    # get_prompt_fn(...) for every task family: a fresh builder per question, one human turn, get_prompt()
    prompts = []
    for message in TASK_MESSAGES.values():
        builder = vlm.get_prompt_builder(None)
        builder.add_turn(role="human", message=message)
        prompts.append(builder.get_prompt())
    assert all(p and p == p.rstrip() for p in prompts)

    # generate_answer: a batch of transformed images stacked by a DataLoader, greedy with the adapter's kwargs
    pixels = torch.stack([image_transform(img) for img in _images(len(prompts))])
    generate_kwargs = {"do_sample": False, "max_new_tokens": 5, "temperature": 1.0}
    answers = vlm.generate_batch(pixels, prompts, None, **generate_kwargs)
    assert len(answers) == len(prompts) and all(isinstance(a, str) for a in answers)
    one_at_a_time = [vlm.generate_batch(pixels[i:i + 1], prompts[i:i + 1], None, **generate_kwargs)[0]
                     for i in range(len(prompts))]
    assert answers == one_at_a_time

    # generate_answer with return_string_probabilities (true/false and multiple-choice tasks)
    probabilities = vlm.generate_batch(pixels[:3], prompts[:3], ["True", "False"], **generate_kwargs)
    assert len(probabilities) == 3 and all(sum(p) == pytest.approx(1.0, abs=1e-5) for p in probabilities)

    # generate (the GUI path)
    text = vlm.generate(_images(1)[0], prompts[0], do_sample=False, temperature=1.0, max_new_tokens=4, min_length=1)
    assert text == vlm.generate_batch(pixels[:1], prompts[:1], do_sample=False, max_new_tokens=4)[0]


def test_a_system_prompt_is_ignored_by_formats_without_one_and_used_by_formats_with_one(run_dir):
    vlm = prism_core.load(run_dir)
    builder = vlm.get_prompt_builder(system_prompt="Answer briefly.")
    builder.add_turn(role="human", message="What is it?")
    if vlm.prompt_format.kind == "pure":  # accepted and ignored, as the original's PurePromptBuilder does
        assert builder.get_prompt() == "In: What is it?\nOut:"
    else:
        assert builder.get_prompt() == "Answer briefly. USER: What is it? ASSISTANT:"
