"""The spec: what a TOML table can say about this backbone. Imported when a spec names the kind, so no torch here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import attrs

from prism_core.spec import VisionBackboneSpec, spec_field


@attrs.frozen(kw_only=True)
class ConvPatchSpec(VisionBackboneSpec):
    kind: ClassVar[str] = "conv-patch"
    presets: ClassVar[dict[str, dict]] = {
        "conv-patch-tiny": {"image_size": 32, "patch_size": 8, "width": 32, "depth": 1},
        "conv-patch-base": {"image_size": 224, "patch_size": 16, "width": 384, "depth": 4},
    }

    image_size: int = spec_field(224, at_least=1, help="square input resolution in pixels")
    patch_size: int = spec_field(16, at_least=1, help="side of one patch; must divide image_size")
    width: int = spec_field(256, at_least=1, help="feature channels per patch (the backbone's embed_dim)")
    depth: int = spec_field(2, at_least=0, help="residual convolution blocks after the patch embedding")
    weights: str | None = spec_field(None, help="a local .safetensors file; random initialisation when unset")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def problems(self) -> Iterator[tuple[str, str]]:
        # Ranges are declared on the fields (at_least=...) and checked by prism; here only what spans fields.
        if self.patch_size >= 1 and self.image_size % self.patch_size:
            yield "image_size", f"must be a multiple of patch_size ({self.patch_size}), got {self.image_size}"

    def build(self):  # torch is imported only now, when a model is actually built
        from prism_plugin_example.backbone import ConvPatchBackbone

        return ConvPatchBackbone(self)
