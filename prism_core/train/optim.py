"""AdamW with decay / no-decay parameter groups, and the learning-rate schedules of the recipe.

The grouping is the original's: matrices (``ndim >= 2``) that are not biases decay; biases and 1-D parameters
(norm scales) do not. Only parameters that require grad are optimised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups over the trainable parameters; names are kept so logs and checkpoints can say which."""
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim >= 2 and not name.endswith(".bias"):
            decay.append(param)
            decay_names.append(name)
        else:
            no_decay.append(param)
            no_decay_names.append(name)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters: check train.stage / train.trainable")
    return [
        {"params": decay, "weight_decay": weight_decay, "param_names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "param_names": no_decay_names},
    ]


def build_optimizer(model: torch.nn.Module, *, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with PyTorch's default betas / eps (as the original), over :func:`param_groups`."""
    groups = [g for g in param_groups(model, weight_decay) if g["params"]]
    return torch.optim.AdamW(groups, lr=learning_rate)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """The original's ``int(total * ratio)``."""
    return int(total_steps * warmup_ratio)


def lr_multiplier(schedule: str, total_steps: int, warmup: int) -> Callable[[int], float]:
    """Multiplier of the peak LR after ``step`` finished optimizer steps (step 0 is the first update).

    ``linear-warmup+cosine-decay``: 0 → 1 linearly over ``warmup`` steps, then half a cosine down to 0 at
    ``total_steps`` (``transformers.get_cosine_schedule_with_warmup``). ``constant``: linear warmup, then 1.
    """
    if schedule not in ("linear-warmup+cosine-decay", "constant"):
        raise ValueError(f"unknown lr_schedule {schedule!r}")

    def multiplier(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return multiplier


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, schedule: str, total_steps: int, warmup_ratio: float
) -> LambdaLR:
    return LambdaLR(optimizer, lr_multiplier(schedule, total_steps, warmup_steps(total_steps, warmup_ratio)))
