"""OpenAI CLIP ViTs from timm (kind ``clip``).

OpenAI's weights were trained with ``quick_gelu``; timm builds these models with exact GELU unless told, which
gives worse features (the original's "super tricky bug"), so the kind defaults ``act_layer = "quick_gelu"``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from prism_plugin_timm_vision.spec import TimmViTSpecBase

from prism_core.spec import spec_field


@attrs.frozen(kw_only=True)
class ClipSpec(TimmViTSpecBase):
    """OpenAI CLIP ViTs, as timm builds them, with quick_gelu: patch features of the second-to-last block."""

    kind: ClassVar[str] = "clip"
    fusion_key: ClassVar[str] = "clip"
    presets: ClassVar[dict[str, dict]] = {
        "clip-vit-b": {"timm_name": "vit_base_patch16_clip_224.openai", "image_size": 224, "patch_size": 16},
        "clip-vit-l": {"timm_name": "vit_large_patch14_clip_224.openai", "image_size": 224, "patch_size": 14},
        "clip-vit-l-336px": {"timm_name": "vit_large_patch14_clip_336.openai", "image_size": 336, "patch_size": 14},
        "clip-tiny": {"timm_name": "vit_base_patch16_clip_224.openai", "image_size": 32, "patch_size": 8,
                      "embed_dim": 64, "depth": 3, "num_heads": 2, "weights": "random"},
    }

    timm_name: str = spec_field("vit_large_patch14_clip_336.openai", help="timm model name with its pretrained tag")
    image_size: int = spec_field(336, at_least=1, help="square input size in pixels")
    patch_size: int = spec_field(14, at_least=1, help="patch size in pixels")
    act_layer: str | None = spec_field(
        "quick_gelu", help="MLP activation; OpenAI CLIP was trained with quick_gelu, which timm does not default to")
