"""Projector specs. Torch-free: the modules are imported inside ``build``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import attrs

from prism_core.spec import ProjectorSpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_projectors.modules import FusedGeluMLPProjector, GeluMLPProjector, LinearProjector


@attrs.frozen(kw_only=True)
class LinearProjectorSpec(ProjectorSpec):
    """One ``Linear(vision_dim, llm_dim)`` (arch specifier ``linear``)."""

    kind: ClassVar[str] = "linear"
    presets: ClassVar[dict[str, dict]] = {"linear": {}}

    bias: bool = spec_field(True, help="learn a bias (the original does)")

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> LinearProjector:
        from prism_plugin_projectors.modules import LinearProjector

        return LinearProjector(in_dim, out_dim, bias=self.bias, seed=seed)


@attrs.frozen(kw_only=True)
class GeluMLPProjectorSpec(ProjectorSpec):
    """``Linear(v, l) → GELU → Linear(l, l)`` (arch specifiers ``gelu-mlp`` and ``no-align+gelu-mlp``)."""

    kind: ClassVar[str] = "gelu-mlp"
    presets: ClassVar[dict[str, dict]] = {"gelu-mlp": {}}

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> GeluMLPProjector:
        from prism_plugin_projectors.modules import GeluMLPProjector

        return GeluMLPProjector(in_dim, out_dim, seed=seed)


@attrs.frozen(kw_only=True)
class FusedGeluMLPProjectorSpec(ProjectorSpec):
    """``Linear(v, 4v) → GELU → Linear(4v, l) → GELU → Linear(l, l)`` (``no-align+fused-gelu-mlp``)."""

    kind: ClassVar[str] = "fused-gelu-mlp"
    presets: ClassVar[dict[str, dict]] = {"fused-gelu-mlp": {}}

    hidden_factor: int = spec_field(4, help="first hidden width = hidden_factor × vision width (4 in the original)")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.hidden_factor < 1:
            yield "hidden_factor", f"must be >= 1, got {self.hidden_factor}"

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> FusedGeluMLPProjector:
        from prism_plugin_projectors.modules import FusedGeluMLPProjector

        return FusedGeluMLPProjector(in_dim, out_dim, hidden_factor=self.hidden_factor, seed=seed)
