"""QLoRA's 4-bit base weights through bitsandbytes: whether they can run here, and quantising the adapted layers.

``backend_problem()`` is what a ``qlora`` spec is checked with (once per process): bitsandbytes installed, and a
4-bit layer that computes a forward and backward pass where training would run (CUDA when available, else the CPU
backend). Only this module and ``adapter`` import bitsandbytes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from prism_plugin_peft.spec import QLoRASpec


@contextlib.contextmanager
def quiet_bitsandbytes() -> Iterator[None]:
    """Importing bitsandbytes on a CPU with AVX-512 warns that the optional ``kernels`` package (a faster 4-bit
    matmul) is missing, then uses its own kernel: nothing a prism user must act on."""
    log = logging.getLogger("bitsandbytes")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _probe(device: str) -> None:
    """A tiny 4-bit layer's forward and backward (LoRA's gradients flow through the frozen base) on ``device``."""
    import torch

    with quiet_bitsandbytes():
        import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(64, 64) * 0.1, requires_grad=False, quant_type="nf4")
    layer.support_avx512bf16_for_cpu = False  # as quantize_linears does
    layer = layer.to(device)
    x = torch.randn(2, 64, device=device, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    dense = x.detach() @ dequantized_weight(layer).to(device).t()
    if not (x.grad is not None and torch.isfinite(x.grad).all() and torch.allclose(out, dense, atol=1e-4)):
        raise RuntimeError("a 4-bit layer's forward or backward does not compute its dequantised matrix product")


@functools.cache
def backend_problem() -> str | None:
    """Why 4-bit layers cannot run in this process, or None when they can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "qlora needs bitsandbytes, which is not installed: pip install 'prism-plugin-peft[qlora]'"
    device = _device()
    try:
        _probe(device)
    except Exception as exc:  # a missing native library, an unsupported CPU or GPU: all mean "cannot run here"
        where = "on CUDA" if device == "cuda" else "here: no CUDA, and its CPU backend failed"
        return f"bitsandbytes cannot run 4-bit layers {where} ({type(exc).__name__}: {exc})"
    return None


def quantize_linears(model: torch.nn.Module, module_names: Sequence[str], spec: QLoRASpec) -> None:
    """Replace each named ``nn.Linear`` of the (real) model by a 4-bit ``bnb.nn.Linear4bit`` holding its weights,
    quantised on the device the weights are on (the CPU: the strategy moves the 4-bit data where it trains)."""
    import torch

    with quiet_bitsandbytes():
        import bitsandbytes as bnb

    compute_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[spec.compute_dtype]
    for name in module_names:
        linear = model.get_submodule(name)
        parent, _, child = name.rpartition(".")
        with torch.device("meta"):  # no throwaway random weights
            layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=spec.double_quant,
                                      quant_type=spec.quant_type)
        layer.weight = bnb.nn.Params4bit(linear.weight.detach(), requires_grad=False, quant_type=spec.quant_type,
                                         compress_statistics=spec.double_quant)
        # On a CPU with AVX-512 BF16, bitsandbytes repacks the weights for a bf16-only kernel at the first forward
        # without gradients: evaluation would then compute in bf16 whatever compute_dtype says (and differ from
        # training). Keep one path: compute_dtype's.
        layer.support_avx512bf16_for_cpu = False
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
        layer = layer.to(linear.weight.device)  # quantises
        setattr(model.get_submodule(parent) if parent else model, child, layer)


def dequantized_weight(layer: Any) -> torch.Tensor:
    """The full-precision weight a 4-bit layer computes with (what a merge adds the update to)."""
    with quiet_bitsandbytes():
        import bitsandbytes as bnb

    weight = layer.weight
    return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
