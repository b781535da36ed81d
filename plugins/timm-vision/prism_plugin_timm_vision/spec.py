"""Specs of timm ViT backbones. Torch-free: the implementation is imported inside ``build``.

``TimmViTSpecBase`` holds every field the timm kinds share (siglip, dinov2 and clip subclass it and change only
their defaults and presets); ``TimmViTSpec`` is kind ``timm-vit``, for any timm ViT named directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from prism_core.spec import SEED_RANGE, VisionBackboneSpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_timm_vision.backbone import TimmViTBackbone

ResizeStrategy = Literal["resize-naive", "resize-crop", "letterbox"]

#: Fields that change the shape of the weights: pretrained timm weights cannot fill a model reshaped by them.
ARCHITECTURE_FIELDS = ("embed_dim", "depth", "num_heads")


@attrs.frozen(kw_only=True)
class TimmViTSpecBase(VisionBackboneSpec):
    """A timm ViT used as a featurizer: patch features of the second-to-last block, prefix tokens removed.

    Not a kind itself: the kinds subclass it and redeclare ``timm_name``/``image_size``/``patch_size`` defaults.
    """

    #: Key of this backbone's pixels in a fused backbone's transform output (``{"dino": ..., "siglip": ...}``).
    fusion_key: ClassVar[str] = "vit"

    timm_name: str = spec_field(
        "vit_large_patch16_224.augreg_in21k_ft_in1k",
        help="timm model name, with the pretrained tag (e.g. 'vit_so400m_patch14_siglip_384.webli')",
    )
    image_size: int = spec_field(224, at_least=1, help="square input size in pixels")
    patch_size: int = spec_field(16, at_least=1, help="patch size in pixels (a different value than the "
                                                      "architecture's reshapes the patch embedding)")
    partial_patches: bool = spec_field(
        False, help="allow an image_size the patch size does not divide: the last rows/columns are ignored, "
                    "as SigLIP SO400M/14 does at 384 px")
    embed_dim: int | None = spec_field(
        None, at_least=1, help="override the architecture's width (random weights only)")
    depth: int | None = spec_field(
        None, at_least=2, help="override the number of transformer blocks (random weights only; features come from "
                               "the second-to-last block)")
    num_heads: int | None = spec_field(
        None, at_least=1, help="override the attention heads (random weights only)")
    act_layer: str | None = spec_field(None, help="override the MLP activation, a timm name such as 'quick_gelu'")
    resize: ResizeStrategy = spec_field(
        "resize-naive", help="resize-naive: stretch to a square; resize-crop: shorter side, then centre crop; "
                             "letterbox: pad to a square with the mean colour, then resize")
    crop_pct: float | None = spec_field(
        None, above=0, at_most=1,
        help="resize-crop/letterbox resize the shorter side to image_size / crop_pct before the centre crop; 1.0 "
             "gives Resize(image_size); None: 1.0 when timm_name contains 'siglip' or 'in1k' (the original's rule), "
             "else timm's value for the model")
    weights: str = spec_field(
        "pretrained", help="'random', 'pretrained' (timm's weights for timm_name, from the local Hugging Face "
                           "cache or the hub) or a path to a .safetensors file in timm's format")
    seed: int = spec_field(0, **SEED_RANGE, help="seed of the random initialisation")

    @property
    def num_patches(self) -> int | None:
        if self.patch_size < 1 or self.image_size < self.patch_size:
            return None
        return (self.image_size // self.patch_size) ** 2

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.image_size >= 1 and self.patch_size >= 1:
            if self.image_size < self.patch_size:
                yield "image_size", f"{self.image_size} is smaller than one patch ({self.patch_size} px)"
            elif self.image_size % self.patch_size and not self.partial_patches:
                below = self.image_size - self.image_size % self.patch_size
                yield "image_size", (
                    f"{self.image_size} is not a multiple of patch_size {self.patch_size}: use {below} or "
                    f"{below + self.patch_size}, or set partial_patches = true to ignore the last "
                    f"{self.image_size % self.patch_size} px")
        if self.embed_dim and self.num_heads and self.embed_dim % self.num_heads:
            yield "num_heads", f"must divide embed_dim {self.embed_dim}, got {self.num_heads}"
        if not self.timm_name.strip():
            yield "timm_name", "must name a timm model"
        if self.weights not in ("random", "pretrained") and not self.weights.endswith(".safetensors"):
            yield "weights", f"must be 'random', 'pretrained' or a path ending in .safetensors, got {self.weights!r}"
        reshaped = [name for name in ARCHITECTURE_FIELDS if getattr(self, name) is not None]
        if self.weights == "pretrained" and reshaped:
            yield "weights", (
                f"pretrained weights of {self.timm_name!r} do not fit a model reshaped by {', '.join(reshaped)}: "
                f"use weights = 'random' or a matching .safetensors file")

    def timm_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``timm.create_model`` besides the name and ``pretrained``."""
        kwargs: dict[str, object] = {"num_classes": 0, "img_size": self.image_size, "patch_size": self.patch_size}
        for name in (*ARCHITECTURE_FIELDS, "act_layer"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs

    def build(self) -> TimmViTBackbone:
        from prism_plugin_timm_vision.backbone import build_timm_backbone

        return build_timm_backbone(self)


@attrs.frozen(kw_only=True)
class TimmViTSpec(TimmViTSpecBase):
    """Any timm ViT, named directly (``timm_name``); IN-1K ViT-L is the original's ``in1k-vit-l``."""

    kind: ClassVar[str] = "timm-vit"
    presets: ClassVar[dict[str, dict]] = {
        # IN-21K → IN-1K supervised ViT-L/16; like SigLIP it resizes to S rather than S / crop_pct.
        "in1k-vit-l": {"timm_name": "vit_large_patch16_224.augreg_in21k_ft_in1k", "image_size": 224,
                       "patch_size": 16, "crop_pct": 1.0},
        "vit-tiny": {"timm_name": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "embed_dim": 64,
                     "depth": 3, "num_heads": 2, "weights": "random"},
    }

    timm_name: str = spec_field("vit_large_patch16_224.augreg_in21k_ft_in1k", help="any timm ViT model name")
