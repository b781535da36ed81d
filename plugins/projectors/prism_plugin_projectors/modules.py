"""Projector modules. Each keeps its layers in an inner ``projector`` attribute (a ``Sequential`` or a bare
``Linear``), exactly like the original ``nn_utils.py``, so a released checkpoint's ``projector`` state dict
(``projector.0.weight``, ``projector.2.bias``, …) loads without renaming."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Build ``make()`` under ``seed`` without disturbing the caller's global RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


class _Projector(nn.Module):
    projector: nn.Module

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"projector widths must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)


class LinearProjector(_Projector):
    def __init__(self, in_dim: int, out_dim: int, *, bias: bool = True, seed: int = 0) -> None:
        super().__init__(in_dim, out_dim)
        self.projector = _seeded(seed, lambda: nn.Linear(in_dim, out_dim, bias=bias))


class GeluMLPProjector(_Projector):
    def __init__(self, in_dim: int, out_dim: int, *, seed: int = 0) -> None:
        super().__init__(in_dim, out_dim)
        self.projector = _seeded(
            seed, lambda: nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        )


class FusedGeluMLPProjector(_Projector):
    def __init__(self, in_dim: int, out_dim: int, *, hidden_factor: int = 4, seed: int = 0) -> None:
        super().__init__(in_dim, out_dim)
        hidden = hidden_factor * in_dim
        self.projector = _seeded(
            seed,
            lambda: nn.Sequential(
                nn.Linear(in_dim, hidden),
                nn.GELU(),
                nn.Linear(hidden, out_dim),
                nn.GELU(),
                nn.Linear(out_dim, out_dim),
            ),
        )
