from __future__ import annotations

import attrs
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from prism_plugin_siglip.spec import SiglipSpec

from prism_core.spec import VisionBackboneSpec, structure

conformance = pytest.importorskip("prism_core.testing.conformance")

# id → (patches, width), as in the original (prismatic-inventory §2.3).
ORIGINAL = {
    "siglip-vit-b16-224px": (196, 768),
    "siglip-vit-b16-256px": (256, 768),
    "siglip-vit-b16-384px": (576, 768),
    "siglip-vit-so400m": (256, 1152),
    "siglip-vit-so400m-384px": (729, 1152),
}


class TestSiglipConformance(conformance.VisionBackboneConformance):
    spec = SiglipSpec.from_preset("siglip-tiny")


@attrs.frozen(kw_only=True)
class Holder:
    vision: VisionBackboneSpec


@pytest.mark.parametrize("preset", sorted(ORIGINAL))
def test_original_presets_build_on_meta_with_the_original_shapes(preset: str) -> None:
    spec = SiglipSpec.from_preset(preset)
    with torch.device("meta"):
        backbone = spec.build()
    assert (backbone.num_patches, backbone.embed_dim) == ORIGINAL[preset] == (spec.num_patches, ORIGINAL[preset][1])
    assert backbone.num_prefix_tokens == 0  # SigLIP has no CLS token
    # timm now defaults these names to SigLIP 2 weights; the presets pin the v1 weights the original used.
    assert spec.timm_name.endswith(".webli") and spec.weights == "pretrained"


def test_presets_are_selectable_by_the_original_ids() -> None:
    assert structure({"vision": "siglip-vit-so400m"}, Holder).vision == SiglipSpec.from_preset("siglip-vit-so400m")
    spec = structure({"vision": {"kind": "siglip", "preset": "siglip-vit-so400m-384px"}}, Holder).vision
    assert spec.timm_name == "vit_so400m_patch14_siglip_384.webli" and spec.num_patches == 729


def test_siglip_tiny_is_the_quickstart_backbone_and_matches_timm() -> None:
    spec = SiglipSpec.from_preset("siglip-tiny")
    backbone = spec.build()
    assert (backbone.image_size, backbone.num_patches, backbone.embed_dim) == (32, 16, 128)
    assert backbone.featurizer.patch_embed.patch_size == (8, 8)
    full = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs()).eval()
    assert not full.load_state_dict(backbone.featurizer.state_dict(), strict=False).unexpected_keys  # same weights
    assert len(full.blocks) == 3 and len(backbone.featurizer.blocks) == 2
    pixels = backbone.image_transform(Image.new("RGB", (50, 20), (0, 128, 255))).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(backbone(pixels), full.get_intermediate_layers(pixels, n=[1])[0], rtol=0, atol=0)


def test_tiny_can_be_reshaped_by_spec_fields() -> None:
    backbone = SiglipSpec.from_preset("siglip-tiny", image_size=48, patch_size=16, embed_dim=96, depth=4,
                                      num_heads=3).build()
    assert (backbone.num_patches, backbone.embed_dim, len(backbone.featurizer.blocks)) == (9, 96, 3)
    assert backbone(torch.zeros(1, 3, 48, 48)).shape == (1, 9, 96)


def test_resize_crop_uses_resize_to_the_image_size_not_over_crop_pct() -> None:
    transform = SiglipSpec.from_preset("siglip-tiny", resize="resize-crop").build().image_transform
    xs = np.tile(np.arange(64, dtype=np.uint8), (32, 1))
    image = Image.fromarray(np.stack([xs, xs, xs], axis=-1))
    # Resize(32) leaves a 64 × 32 image as it is; timm's 32 / 0.9 would resample it.
    out = transform(image)
    expected = (torch.arange(16, 48, dtype=torch.float32) / 255 - 0.5) / 0.5
    torch.testing.assert_close(out[0], expected.expand(32, 32), rtol=0, atol=0)


def test_letterbox_fill_is_the_siglip_mean_grey() -> None:
    transform = SiglipSpec.from_preset("siglip-tiny", resize="letterbox").build().image_transform
    assert transform.fill == (127, 127, 127)
    out = transform(Image.new("RGB", (32, 16), (255, 0, 0)))
    torch.testing.assert_close(out[:, :8], torch.full((3, 8, 32), 127.0).div(255).sub(0.5).div(0.5), rtol=0, atol=0)
