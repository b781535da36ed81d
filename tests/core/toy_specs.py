"""Torch-free toy spec classes for core tests (registered in memory, never built)."""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs

from prism_core.spec import (
    LLMBackboneSpec,
    ProjectorSpec,
    TrainStrategySpec,
    VisionBackboneSpec,
    spec_field,
)


@attrs.frozen(kw_only=True)
class ToyVision(VisionBackboneSpec):
    kind: ClassVar[str] = "toy-vision"
    presets: ClassVar = {"toy-small": {"image_size": 32, "patch_size": 8}, "toy-big": {"image_size": 448}}
    image_size: int = spec_field(224, help="input resolution")
    patch_size: int = spec_field(16, help="patch side")
    resize: Literal["resize-naive", "letterbox"] = "letterbox"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def problems(self):
        if self.image_size % self.patch_size:
            yield "image_size", f"must be a multiple of patch_size ({self.patch_size}), got {self.image_size}"


@attrs.frozen(kw_only=True)
class ToyFused(VisionBackboneSpec):
    kind: ClassVar[str] = "toy-fused"
    members: tuple[VisionBackboneSpec, ...] = ()


@attrs.frozen(kw_only=True)
class ToyLLM(LLMBackboneSpec):
    kind: ClassVar[str] = "toy-llm"
    hidden_size: int = 64
    use_cache: bool = True

    @property
    def default_prompt_format(self) -> str:
        return "pure"


@attrs.frozen(kw_only=True)
class ToyProjector(ProjectorSpec):
    kind: ClassVar[str] = "toy-mlp"
    depth: int = 2


@attrs.frozen(kw_only=True)
class ToySingle(TrainStrategySpec):
    kind: ClassVar[str] = "single"


ALL = (ToyVision, ToyFused, ToyLLM, ToyProjector, ToySingle)

GOOD_SPEC = """\
schema = 1

[model]
vision = "toy-small"
projector = { kind = "toy-mlp" }

[model.llm]
kind = "toy-llm"
hidden_size = 32

[train]
stage = "align"
per_device_batch_size = 8
"""
