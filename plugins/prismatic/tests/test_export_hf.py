"""``prism export hf``: a prism model → LlavaForConditionalGeneration with the same logits and greedy generation."""

from __future__ import annotations

import pytest
import torch
from prism_plugin_prismatic.export_hf import ExportError, build_llava, export_llava

from prism_core.composition import build
from prism_core.registry import use_registry
from prism_core.spec import ModelSpec, structure
from prism_core.testing.fakes import fake_registry

timm_spec = pytest.importorskip("prism_plugin_timm_vision.spec")
from prism_plugin_projectors.spec import (  # noqa: E402
    FusedGeluMLPProjectorSpec,
    GeluMLPProjectorSpec,
    PixelShuffleMLPProjectorSpec,
    PoolMLPProjectorSpec,
    ResamplerProjectorSpec,
)


@pytest.fixture(autouse=True)
def registry():
    extra = [GeluMLPProjectorSpec, FusedGeluMLPProjectorSpec, PixelShuffleMLPProjectorSpec, PoolMLPProjectorSpec,
             ResamplerProjectorSpec, timm_spec.TimmViTSpec]
    with use_registry(fake_registry(extra=extra)) as r:
        yield r


def _model(projector: str | dict = "gelu-mlp", vision: dict | None = None):
    vision = vision or {"kind": "timm-vit", "timm_name": "vit_base_patch16_siglip_224", "image_size": 32,
                        "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2, "weights": "random"}
    projector = {"kind": projector} if isinstance(projector, str) else projector
    spec = structure({"vision": vision, "llm": {"kind": "fake-llama"}, "projector": projector}, ModelSpec)
    return build(spec).eval()


def test_export_gives_the_same_logits_and_greedy_generation(tmp_path):
    from transformers import LlavaForConditionalGeneration

    vlm = _model()
    out = export_llava(vlm, tmp_path / "llava")
    llava = LlavaForConditionalGeneration.from_pretrained(out).eval()
    tok = vlm.llm_backbone.tokenizer
    text = tok("In: what shape?\nOut:", add_special_tokens=False).input_ids
    pixels = torch.randn(1, 3, vlm.vision_backbone.image_size, vlm.vision_backbone.image_size)
    ids = torch.tensor([[tok.bos_token_id, *text]])
    image_id = llava.config.image_token_id
    llava_ids = torch.tensor([[tok.bos_token_id] + [image_id] * vlm.vision_backbone.num_patches + text])
    with torch.no_grad():
        ours = vlm(input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), pixel_values=pixels).logits
        theirs = llava(input_ids=llava_ids, pixel_values=pixels).logits
    vocab = ours.shape[-1]
    torch.testing.assert_close(theirs[..., :vocab], ours, atol=1e-5, rtol=0)
    new = llava.generate(input_ids=llava_ids, pixel_values=pixels, max_new_tokens=6, do_sample=False)
    expected = vlm.generate_batch(pixels, ["In: what shape?\nOut:"], max_new_tokens=6, do_sample=False)[0]
    assert tok.decode(new[0, llava_ids.shape[1]:], skip_special_tokens=True).strip() == expected


def test_class_token_vit_without_clip_layout_is_refused():
    with pytest.raises(ExportError, match="CLIPVisionModel only with CLIP's pre-norm"):
        build_llava(_model(vision={"kind": "timm-vit", "preset": "vit-tiny"}))


def test_fused_projector_is_refused_with_the_reason():
    with pytest.raises(ExportError, match=r"Linear → GELU → Linear.*fused-gelu-mlp"):
        build_llava(_model("fused-gelu-mlp"))


@pytest.mark.parametrize("projector", ["pixel-shuffle-mlp", "pool-mlp", {"kind": "resampler", "num_queries": 16}],
                         ids=["pixel-shuffle-mlp", "pool-mlp", "resampler"])
def test_projectors_llava_cannot_express_are_refused_with_the_reason(projector):
    vlm = _model(projector)
    kind = projector if isinstance(projector, str) else projector["kind"]
    # The resampler keeps the count here (16 queries, 16 patches): its layers are what Llava cannot express.
    reason = "Linear → GELU → Linear" if kind == "resampler" else f"this projector \\({kind}\\) makes 4 image tokens"
    with pytest.raises(ExportError, match=reason):
        build_llava(vlm)
