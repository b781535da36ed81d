"""DINOv2 ViTs from timm (kind ``dinov2``).

The original uses DINOv2 ViT-L/14 with 4 registers at 224 px (it was trained at 518 px: the position embeddings
are resampled when the weights load). The CLS token and the registers are removed from the features.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from prism_plugin_timm_vision.spec import TimmViTSpecBase

from prism_core.spec import spec_field


@attrs.frozen(kw_only=True)
class Dinov2Spec(TimmViTSpecBase):
    """DINOv2 ViTs with registers, as timm builds them: patch features of the second-to-last block."""

    kind: ClassVar[str] = "dinov2"
    fusion_key: ClassVar[str] = "dino"
    presets: ClassVar[dict[str, dict]] = {
        "dinov2-vit-l": {"timm_name": "vit_large_patch14_reg4_dinov2.lvd142m", "image_size": 224, "patch_size": 14},
        "dinov2-tiny": {"timm_name": "vit_large_patch14_reg4_dinov2", "image_size": 32, "patch_size": 8,
                        "embed_dim": 64, "depth": 3, "num_heads": 2, "weights": "random"},
    }

    timm_name: str = spec_field("vit_large_patch14_reg4_dinov2.lvd142m", help="timm model name with its pretrained tag")
    image_size: int = spec_field(224, at_least=1, help="square input size in pixels")
    patch_size: int = spec_field(14, at_least=1, help="patch size in pixels")
