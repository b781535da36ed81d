"""Spec of the FSDP2 strategy (torch-free at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from prism_core.spec import TrainStrategySpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_fsdp.strategy import FSDPStrategy


@attrs.frozen(kw_only=True)
class FSDPSpec(TrainStrategySpec):
    """Parameters, gradients and optimizer state sharded over ranks with FSDP2 ``fully_shard``.

    Each vision block and LLM decoder layer is its own shard unit; the composed model is the root.
    ``full-shard`` reshards parameters after forward (least memory), ``shard-grad-op`` keeps them gathered until
    backward is done (less communication), ``hybrid`` shards within a node and replicates across nodes.
    """

    kind: ClassVar[str] = "fsdp"
    presets: ClassVar[dict[str, dict]] = {
        "fsdp-full-shard": {"sharding": "full-shard"},
        "fsdp-shard-grad-op": {"sharding": "shard-grad-op"},
        "fsdp-hybrid": {"sharding": "hybrid"},
    }

    sharding: Literal["full-shard", "shard-grad-op", "hybrid"] = spec_field("full-shard", help="see the class doc")
    param_dtype: Literal["auto", "bf16", "fp32"] = spec_field(
        "auto", help="dtype of gathered parameters for compute; auto follows train.precision"
    )
    reduce_dtype: Literal["fp32", "bf16"] = spec_field("fp32", help="dtype of the gradient reduce-scatter")
    backend: Literal["auto", "nccl", "gloo"] = spec_field("auto", help="auto: nccl with CUDA, else gloo")

    def build(self) -> FSDPStrategy:
        from prism_plugin_fsdp.strategy import FSDPStrategy

        return FSDPStrategy(self)
