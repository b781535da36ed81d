"""The real tiny components composed: siglip-tiny / dinosiglip-tiny + projectors + llama-tiny + pure format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from prism_core.registry import PluginError, get_registry
from prism_core.types import Role

pytestmark = pytest.mark.slow  # builds real tiny backbones (~5 s per test on 2 shared cores)


def _require(role: Role, kind: str) -> None:
    try:
        get_registry().resolve(role, kind)
    except PluginError as exc:
        pytest.skip(f"{kind} not installed: {exc}")


@pytest.fixture(scope="module", params=[("siglip-tiny", "gelu-mlp"), ("dinosiglip-tiny", "fused-gelu-mlp")])
def composed(request: pytest.FixtureRequest):
    vision, projector = request.param
    for role, kind in [(Role.LLM_BACKBONE, "llama2"), (Role.PROJECTOR, projector),
                       (Role.VISION_BACKBONE, "fused" if "dino" in vision else "siglip")]:
        _require(role, kind)
    from prism_core.composition import compose

    return compose(vision=vision, projector=projector, llm="llama-tiny", seed=3)


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (50, 40), c) for c in [(200, 0, 0), (0, 150, 0), (0, 0, 220)]]


def test_training_step_for_every_stage(composed) -> None:
    from prism_core.prompting import tokenize_conversation
    from prism_core.types import IGNORE_INDEX, Turn

    tok = composed.tokenizer
    rows = [("What colour is the shape?", "red"), ("How many shapes are there?", "two circles")]
    encoded = [tokenize_conversation(tok, composed.prompt_format, [Turn("human", q), Turn("gpt", a)]) for q, a in rows]
    width = max(len(i) for i, _ in encoded)
    ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in encoded])
    labels = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in encoded])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in encoded]).bool()
    pixels = composed.image_transform(_images()[0])
    pixels = {k: v[None] for k, v in pixels.items()} if isinstance(pixels, dict) else pixels[None]
    for stage, vision_trains in [("align", False), ("finetune", False), ("full-finetune", True)]:
        composed.configure_trainable(stage)
        composed.zero_grad(set_to_none=True)
        out = composed(ids, mask, labels, pixels, torch.tensor([0]))
        assert torch.isfinite(out.loss) and int(out.num_tokens) == int((labels[:, 1:] != IGNORE_INDEX).sum())
        out.loss.backward()
        vision_grads = [p.grad is not None for p in composed.vision_backbone.parameters()]
        assert all(vision_grads) if vision_trains else not any(vision_grads)
        assert all(p.grad is not None for p in composed.projector.parameters())
    composed.configure_trainable("align")
    composed.requires_grad_(False)


def test_batched_generation_equals_row_by_row_and_survives_save_load(composed, tmp_path: Path) -> None:
    from prism_core import generation, load, save

    builder = composed.get_prompt_builder()
    builder.add_turn(role="human", message="What colour is the shape?")
    prompts = [builder.get_prompt(), "In: Describe the picture.\nOut:", "In: hi\nOut:"]
    pixels = [composed.image_transform(img) for img in _images()]
    pixels[2] = None
    kwargs = {"max_new_tokens": 5, "do_sample": False}
    batched = generation.generate_ids(composed, pixels, prompts, **kwargs)
    for i in range(3):
        alone = generation.generate_ids(composed, [pixels[i]], [prompts[i]], **kwargs)
        assert batched[i, : alone.shape[1]].tolist() == alone[0].tolist()
    loaded = load(save(composed, tmp_path / "m"))
    assert torch.equal(generation.generate_ids(loaded, pixels, prompts, **kwargs), batched)
    probs = loaded.score(_images()[0], prompts[0], ["red", "green", "blue square"])
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
