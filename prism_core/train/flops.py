"""Model FLOPs for an MFU estimate: the ``6·N`` rule applied per component.

Per token a matmul parameter costs 2 FLOPs forward, 2 more for the activation gradient and 2 more for the weight
gradient. So a trainable component costs ``6·N`` per token it processes, a frozen one that gradients flow through
(the LLM in the align stage) ``4·N``, and a frozen one with nothing trainable before it (the vision tower) ``2·N``.
Attention score FLOPs and embedding lookups are left out, so the estimate is slightly low for long sequences.

The LLM's output head is charged per supervised token when the loss is computed from hidden states (the chunked
loss projects only those: ``PrismVLM.forward(..., logits=False)`` with a backbone that has an ``output_head``), else
per token like the rest of the LLM.

Per image, the vision tower processes every patch and the projector is charged once per image token it emits: exact
for the MLP projectors, after a pixel shuffle and for ``pool-mlp`` (which pools before its MLP); low for a resampler,
whose input projection and keys/values also run over every patch. The LLM's image tokens are in its token count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prism_core.protocols import image_tokens

#: Dense bf16 tensor-core peak per device, TFLOP/s (vendor datasheets, without sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


@dataclass(frozen=True)
class FlopsModel:
    """FLOPs per LLM token, per image and per supervised token (the output head under the chunked loss) for one
    training step's forward + backward."""

    per_llm_token: float
    per_image: float
    per_supervised_token: float = 0.0

    def step_flops(self, llm_tokens: int, images: int, supervised_tokens: int = 0) -> float:
        return (self.per_llm_token * llm_tokens + self.per_image * images
                + self.per_supervised_token * supervised_tokens)


def _counted_params(module: torch.nn.Module | None, without: torch.nn.Module | None = None) -> tuple[int, int]:
    """(total, trainable) parameter counts, without embedding tables (lookups, not matmuls) and without the
    parameters of ``without``."""
    if module is None:
        return 0, 0
    skip = {id(p) for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    skip |= {id(p) for p in without.parameters()} if without is not None else set()
    params = [p for p in module.parameters() if id(p) not in skip]
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _cost(total: int, trainable: int, grads_flow_through: bool) -> float:
    frozen = total - trainable
    return 6.0 * trainable + (4.0 if grads_flow_through else 2.0) * frozen


def flops_model(model: torch.nn.Module) -> FlopsModel:
    """Estimate for a prism VLM (``vision_backbone`` / ``projector`` / ``llm_backbone``) or any causal model."""
    vision = getattr(model, "vision_backbone", None)
    projector = getattr(model, "projector", None)
    llm = getattr(model, "llm_backbone", None)
    if llm is None:  # a plain model: every parameter sees every token
        total, trainable = _counted_params(model)
        return FlopsModel(_cost(total, trainable, True), 0.0)
    v_total, v_train = _counted_params(vision)
    p_total, p_train = _counted_params(projector)
    l_total, l_train = _counted_params(llm)
    patches = int(getattr(vision, "num_patches", 0) or 0)
    tokens = image_tokens(projector, patches) if projector is not None else patches
    per_image = patches * _cost(v_total, v_train, False) + tokens * _cost(p_total, p_train, v_train > 0)
    head = getattr(llm, "output_head", None)
    if head is None:
        return FlopsModel(_cost(l_total, l_train, (p_train + v_train) > 0), per_image)
    b_total, b_train = _counted_params(llm, without=head)
    h_total, h_train = _counted_params(head)  # a head tied to the input embeddings is a matmul here too
    return FlopsModel(_cost(b_total, b_train, (p_train + v_train) > 0), per_image,
                      _cost(h_total, h_train, (b_train + p_train + v_train) > 0))


def peak_flops_per_device(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one device: ``override_tflops`` if given, else looked up by CUDA device name; None on CPU."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None
