"""Specs of the adapter kinds ``lora``, ``dora`` and ``qlora`` (torch-free: peft is imported in ``build``).

The fields every adapter has (``target``, ``exclude``, ``fully_trained``, ``fully_trained_learning_rate``) come from
``prism_core.spec.ModelAdapterSpec``; these add LoRA's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import attrs

from prism_core.spec import ModelAdapterSpec, TrainSpec, spec_field

#: LLaVA v1.5's LoRA recipe (scripts/v1_5/finetune_lora.sh): LoRA on every linear layer of the LLM, r 128,
#: alpha 256, dropout 0.05; the projector trained in full at 2e-5 while the adapter trains at 2e-4.
LLAVA_V15_LORA: dict[str, Any] = {"r": 128, "alpha": 256, "dropout": 0.05, "fully_trained_learning_rate": 2e-5}


@attrs.frozen(kw_only=True)
class LoRASpec(ModelAdapterSpec):
    """LoRA (Hu et al., 2021) through peft: each adapted linear layer computes ``W x + (alpha / r) · B A x`` with
    A (r × in) Kaiming-uniform and B (out × r) zero, so training starts from the base model exactly."""

    kind: ClassVar[str] = "lora"
    presets: ClassVar[dict[str, dict[str, Any]]] = {"llava-v15": LLAVA_V15_LORA}

    r: int = spec_field(8, at_least=1, help="rank of each layer's update")
    alpha: float = spec_field(16.0, above=0, help="the update is scaled by alpha / r (alpha / sqrt(r) with rslora)")
    dropout: float = spec_field(0.0, at_least=0, help="dropout on the adapter's input while training, in [0, 1)")
    rslora: bool = spec_field(False, help="rank-stabilised scaling alpha / sqrt(r)")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.dropout >= 1:
            yield "dropout", f"must be in [0, 1), got {self.dropout}"

    def build(self, *, seed: int = 0) -> Any:
        from prism_plugin_peft.adapter import PeftAdapter

        return PeftAdapter(self, seed=seed)


@attrs.frozen(kw_only=True)
class DoRASpec(LoRASpec):
    """DoRA (Liu et al., 2024) through peft: LoRA's update of each weight's direction, and a trained magnitude per
    output row (initialised to the base weight's row norms, so training starts from the base model exactly)."""

    kind: ClassVar[str] = "dora"
    presets: ClassVar[dict[str, dict[str, Any]]] = {"llava-v15": LLAVA_V15_LORA}


@attrs.frozen(kw_only=True)
class QLoRASpec(LoRASpec):
    """QLoRA (Dettmers et al., 2023): LoRA on a base whose adapted linear layers hold 4-bit weights
    (bitsandbytes, ``pip install 'prism-plugin-peft[qlora]'``). The base is quantised once it is real, on the CPU,
    before the strategy places it: unsharded strategies only (``single``, ``ddp``). Where bitsandbytes cannot run
    (no CUDA and no working CPU backend) the spec is refused before any work."""

    kind: ClassVar[str] = "qlora"
    presets: ClassVar[dict[str, dict[str, Any]]] = {"llava-v15": LLAVA_V15_LORA}

    quant_type: Literal["nf4", "fp4"] = spec_field("nf4", help="4-bit data type: NormalFloat4 or FP4")
    double_quant: bool = spec_field(True, help="quantise the quantisation constants too (QLoRA's double quantisation)")
    compute_dtype: Literal["bf16", "fp32"] = spec_field(
        "bf16", help="dtype the 4-bit layers compute in (their weights dequantised to it)")

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        from prism_plugin_peft.quantize import backend_problem  # torch only when bitsandbytes is installed

        problem = backend_problem()
        if problem is not None:
            yield "kind", problem

    def train_problems(self, train: TrainSpec) -> Iterator[tuple[str, str]]:
        if train.strategy is not None and train.strategy.kind == "fsdp":
            yield "strategy.kind", ("qlora quantises the whole base on each rank before it is placed, which a "
                                    "sharded strategy cannot take: use 'single' or 'ddp' (or kind 'lora' with fsdp)")
