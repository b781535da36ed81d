"""AdamW with decay / no-decay parameter groups, and the learning-rate schedules of the recipe.

The grouping is the original's: matrices (``ndim >= 2``) that are not biases decay; biases and 1-D parameters
(norm scales) do not. Only parameters that require grad are optimised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: torch.nn.Module, weight_decay: float,
                 learning_rates: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Two AdamW groups over the trainable parameters; names are kept so logs and checkpoints can say which.
    ``learning_rates`` gives some parameters (by name) a peak learning rate of their own: each such rate adds its
    own decay / no-decay pair of groups (``lr`` set), after the two at the optimizer's rate."""
    learning_rates = learning_rates or {}
    groups: dict[tuple[float | None, bool], dict[str, Any]] = {}  # (own peak lr, decays) → group

    def group(lr: float | None, decays: bool) -> dict[str, Any]:
        if (lr, decays) not in groups:
            groups[(lr, decays)] = {"params": [], "weight_decay": weight_decay if decays else 0.0,
                                    "param_names": [], **({} if lr is None else {"lr": lr})}
        return groups[(lr, decays)]

    group(None, True), group(None, False)  # the optimizer's rate first, as without own rates
    for name, param in model.named_parameters():
        if param.requires_grad:
            chosen = group(learning_rates.get(name), param.ndim >= 2 and not name.endswith(".bias"))
            chosen["params"].append(param)
            chosen["param_names"].append(name)
    if not any(g["params"] for g in groups.values()):
        raise ValueError("no trainable parameters: check train.stage / train.trainable")
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, *, learning_rate: float, weight_decay: float,
                    learning_rates: Mapping[str, float] | None = None) -> torch.optim.AdamW:
    """AdamW with PyTorch's default betas / eps (as the original), over :func:`param_groups`."""
    groups = [g for g in param_groups(model, weight_decay, learning_rates) if g["params"]]
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
