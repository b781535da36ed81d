from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from prism_plugin_dinov2.spec import Dinov2Spec

conformance = pytest.importorskip("prism_core.testing.conformance")


class TestDinov2Conformance(conformance.VisionBackboneConformance):
    spec = Dinov2Spec.from_preset("dinov2-tiny")


def test_dinov2_vit_l_builds_on_meta_with_the_original_shape() -> None:
    spec = Dinov2Spec.from_preset("dinov2-vit-l")
    with torch.device("meta"):
        backbone = spec.build()
    assert (backbone.num_patches, backbone.embed_dim, backbone.image_size) == (256, 1024, 224)
    assert spec.timm_name == "vit_large_patch14_reg4_dinov2.lvd142m"
    assert backbone.num_prefix_tokens == 5  # CLS + 4 registers, all removed from the features


def test_cls_and_registers_are_removed_like_timm_intermediate_layers() -> None:
    spec = Dinov2Spec.from_preset("dinov2-tiny", seed=4)
    backbone = spec.build()
    full = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs()).eval()
    assert not full.load_state_dict(backbone.featurizer.state_dict(), strict=False).unexpected_keys  # same weights
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = full.get_intermediate_layers(pixels, n=[1])[0]
        with_prefix = full.forward_intermediates(pixels, indices=[1], return_prefix_tokens=True,
                                                 intermediates_only=True, output_fmt="NLC")[0]
        features = backbone(pixels)
    assert with_prefix[1].shape[1] == 5 and features.shape == (2, 16, 64)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


def test_transform_uses_imagenet_normalisation_and_letterbox_fill() -> None:
    transform = Dinov2Spec.from_preset("dinov2-tiny", resize="letterbox").build().image_transform
    assert transform.mean == (0.485, 0.456, 0.406) and transform.fill == (123, 116, 103)
    out = transform(Image.new("RGB", (16, 32), (0, 0, 0)))  # tall: columns 0..7 and 24..31 are fill
    expected = (torch.tensor([123, 116, 103]) / 255 - torch.tensor(transform.mean)) / torch.tensor(transform.std)
    torch.testing.assert_close(out[:, :, 0], expected.view(3, 1).expand(3, 32), rtol=0, atol=0)
