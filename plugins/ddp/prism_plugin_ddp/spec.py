"""Spec of the DDP strategy (torch-free at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from prism_core.spec import TrainStrategySpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_ddp.strategy import DDPStrategy


@attrs.frozen(kw_only=True)
class DDPSpec(TrainStrategySpec):
    """Every rank holds the whole model; gradients are averaged with all-reduce (gloo on CPU, NCCL on GPU)."""

    kind: ClassVar[str] = "ddp"
    presets: ClassVar[dict[str, dict]] = {"ddp": {}, "ddp-gloo": {"backend": "gloo"}}

    backend: Literal["auto", "nccl", "gloo"] = spec_field("auto", help="auto: nccl with CUDA, else gloo")
    bucket_cap_mb: int = spec_field(25, at_least=1, help="gradient all-reduce bucket size")
    find_unused_parameters: bool = spec_field(
        False, help="only for models whose graph skips parameters (prism models keep every branch in the graph)"
    )

    def build(self) -> DDPStrategy:
        from prism_plugin_ddp.strategy import DDPStrategy

        return DDPStrategy(self)
