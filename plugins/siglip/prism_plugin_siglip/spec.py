"""SigLIP ViTs from timm (kind ``siglip``).

Presets pin the ``.webli`` weights the original used: timm now defaults these names to the SigLIP 2
(``.v2_webli``) weights, which would silently change the features. SigLIP has no CLS token.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from prism_plugin_timm_vision.spec import TimmViTSpecBase

from prism_core.spec import spec_field


@attrs.frozen(kw_only=True)
class SiglipSpec(TimmViTSpecBase):
    """SigLIP ViTs (Google, sigmoid loss), as timm builds them: patch features of the second-to-last block."""

    kind: ClassVar[str] = "siglip"
    fusion_key: ClassVar[str] = "siglip"
    presets: ClassVar[dict[str, dict]] = {
        "siglip-vit-b16-224px": {"timm_name": "vit_base_patch16_siglip_224.webli", "image_size": 224, "patch_size": 16},
        "siglip-vit-b16-256px": {"timm_name": "vit_base_patch16_siglip_256.webli", "image_size": 256, "patch_size": 16},
        "siglip-vit-b16-384px": {"timm_name": "vit_base_patch16_siglip_384.webli", "image_size": 384, "patch_size": 16},
        "siglip-vit-so400m": {"timm_name": "vit_so400m_patch14_siglip_224.webli", "image_size": 224, "patch_size": 14},
        # 384 / 14 = 27.4: the model sees 27 × 27 = 729 patches and ignores the last 6 px, as it was trained.
        "siglip-vit-so400m-384px": {"timm_name": "vit_so400m_patch14_siglip_384.webli", "image_size": 384,
                                    "patch_size": 14, "partial_patches": True},
        # The quickstart's backbone: SigLIP architecture, 32 px, 8 px patches (16), width 128, 3 blocks.
        "siglip-tiny": {"timm_name": "vit_base_patch16_siglip_224", "image_size": 32, "patch_size": 8,
                        "embed_dim": 128, "depth": 3, "num_heads": 4, "weights": "random"},
    }

    timm_name: str = spec_field("vit_so400m_patch14_siglip_224.webli", help="timm model name with its pretrained tag")
    image_size: int = spec_field(224, at_least=1, help="square input size in pixels")
    patch_size: int = spec_field(14, at_least=1, help="patch size in pixels")
    crop_pct: float | None = spec_field(
        1.0, above=0, at_most=1,
        help="resize-crop/letterbox resize the shorter side to image_size / crop_pct; SigLIP uses Resize(S) (1.0) "
             "rather than timm's S / 0.9")
