from __future__ import annotations

import pytest
import torch
from prism_plugin_clip.spec import ClipSpec
from timm.layers.activations import QuickGELU

conformance = pytest.importorskip("prism_core.testing.conformance")

ORIGINAL = {"clip-vit-b": (196, 768, 224), "clip-vit-l": (256, 1024, 224), "clip-vit-l-336px": (576, 1024, 336)}


class TestClipConformance(conformance.VisionBackboneConformance):
    spec = ClipSpec.from_preset("clip-tiny")


@pytest.mark.parametrize("preset", sorted(ORIGINAL))
def test_original_presets_build_on_meta_with_quick_gelu(preset: str) -> None:
    spec = ClipSpec.from_preset(preset)
    with torch.device("meta"):
        backbone = spec.build()
    assert (backbone.num_patches, backbone.embed_dim, backbone.image_size) == ORIGINAL[preset]
    assert spec.timm_name.endswith(".openai")
    assert all(isinstance(block.mlp.act, QuickGELU) for block in backbone.featurizer.blocks)


def test_quick_gelu_changes_the_features_and_can_be_turned_off() -> None:
    quick = ClipSpec.from_preset("clip-tiny").build()
    exact = ClipSpec.from_preset("clip-tiny", act_layer="gelu").build()
    assert not isinstance(exact.featurizer.blocks[0].mlp.act, QuickGELU)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(quick(pixels), exact(pixels))


def test_transform_keeps_timm_crop_pct_and_openai_normalisation() -> None:
    transform = ClipSpec.from_preset("clip-tiny", resize="resize-crop").build().image_transform
    assert transform.crop_pct == 0.9  # timm's ViT-B/16 CLIP value, used by the original's resize-crop
    assert transform.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert transform.fill == (122, 116, 104)
