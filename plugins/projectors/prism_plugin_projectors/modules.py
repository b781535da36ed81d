"""Projector modules. Each keeps its layers in an inner ``projector`` attribute (a ``Sequential`` or a bare
``Linear``), exactly like the original ``nn_utils.py``, so a released checkpoint's ``projector`` state dict
(``projector.0.weight``, ``projector.2.bias``, …) loads without renaming.

Built through ``prism_core.materialize.build_on_meta`` (see ``spec.py``): each layer takes torch's default
initialisation, seeded by ``(seed, layer name)``, whether it is built eagerly or on meta and materialised later.

The grid projectors (pixel shuffle, pooling) read the patch features as the vision backbone's square grid in
row-major order (``prism_core.protocols.patch_grid``); their image-token counts come from ``spec.py``'s functions.
"""

from __future__ import annotations

import torch
from torch import nn

from prism_plugin_projectors.spec import blocks_per_side, grid_side, pixel_shuffle_tokens, pooled_tokens


class _Projector(nn.Module):
    projector: nn.Module

    def __init__(self, in_dim: int, out_dim: int, seed: int) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"projector widths must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.init_seed = seed

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)

    def init_module(self, module: nn.Module, name: str) -> None:
        """Materialisation hook: ``Linear``'s own (Kaiming-uniform) initialisation."""
        module.reset_parameters()


class LinearProjector(_Projector):
    def __init__(self, in_dim: int, out_dim: int, *, bias: bool = True, seed: int = 0) -> None:
        super().__init__(in_dim, out_dim, seed)
        self.projector = nn.Linear(in_dim, out_dim, bias=bias)


class GeluMLPProjector(_Projector):
    def __init__(self, in_dim: int, out_dim: int, *, seed: int = 0) -> None:
        super().__init__(in_dim, out_dim, seed)
        self.projector = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class FusedGeluMLPProjector(_Projector):
    def __init__(self, in_dim: int, out_dim: int, *, hidden_factor: int = 4, seed: int = 0) -> None:
        super().__init__(in_dim, out_dim, seed)
        hidden = hidden_factor * in_dim
        self.projector = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim)
        )


# -- projectors that change the number of image tokens ---------------------------------------------------------------
def _as_grid(features: torch.Tensor) -> torch.Tensor:
    """``[B, N, D]`` patch features (row-major over a square grid) → ``[B, S, S, D]``."""
    side = grid_side(features.shape[1])
    return features.unflatten(1, (side, side))


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """The ``gelu-mlp`` layers, so the grid projectors keep its ``projector.0`` / ``projector.2`` layout."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class PixelShuffleMLPProjector(_Projector):
    """Space-to-depth: the ``ratio × ratio`` patches of each block, concatenated row by row, become one token, which
    ``gelu-mlp`` layers (input ``ratio² × in_dim`` wide) map to the LLM width."""

    def __init__(self, in_dim: int, out_dim: int, *, ratio: int = 2, pad_grid: bool = False, seed: int = 0) -> None:
        super().__init__(in_dim, out_dim, seed)
        if ratio < 1:
            raise ValueError(f"ratio must be >= 1, got {ratio}")
        self.ratio, self.pad_grid = ratio, pad_grid
        self.projector = _mlp(ratio * ratio * in_dim, out_dim)

    def num_tokens(self, num_patches: int) -> int:
        return pixel_shuffle_tokens(num_patches, self.ratio, self.pad_grid)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grid, r = _as_grid(features), self.ratio
        blocks = blocks_per_side(grid.shape[1], r, partial=self.pad_grid)  # raises for an undivided grid
        missing = blocks * r - grid.shape[1]
        if missing:  # zero patches at the bottom and the right (F.pad counts dimensions from the last: D, W, H)
            grid = nn.functional.pad(grid, (0, 0, 0, missing, 0, missing))
        batch, width = grid.shape[0], grid.shape[-1]
        # [B, H/r, r, W/r, r, D] → [B, H/r, W/r, r, r, D]: each block's patches next to each other, row by row.
        grid = grid.reshape(batch, blocks, r, blocks, r, width).transpose(2, 3)
        return self.projector(grid.reshape(batch, blocks * blocks, r * r * width))


class PoolMLPProjector(_Projector):
    """Average pooling of the patch grid in ``stride × stride`` windows (a partial last window averages what it
    covers), ``gelu-mlp`` layers on the pooled tokens, then, with ``positional_conv``, a depthwise 3×3 convolution
    of the token grid added to each token (LDPv2's positional enhancement)."""

    def __init__(self, in_dim: int, out_dim: int, *, stride: int = 2, positional_conv: bool = True,
                 seed: int = 0) -> None:
        super().__init__(in_dim, out_dim, seed)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        self.projector = _mlp(in_dim, out_dim)
        self.positional = nn.Conv2d(out_dim, out_dim, 3, padding=1, groups=out_dim) if positional_conv else None

    def num_tokens(self, num_patches: int) -> int:
        return pooled_tokens(num_patches, self.stride)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grid = _as_grid(features).permute(0, 3, 1, 2)  # [B, D, S, S]
        # Without padding, ceil_mode's partial windows divide by the patches they cover, not by stride².
        window = min(self.stride, grid.shape[-1])
        pooled = nn.functional.avg_pool2d(grid, window, self.stride, ceil_mode=True)
        side = pooled.shape[-1]
        tokens = self.projector(pooled.flatten(2).transpose(1, 2))  # [B, side², out_dim]
        if self.positional is None:
            return tokens
        positional = self.positional(tokens.transpose(1, 2).unflatten(2, (side, side)))
        return tokens + positional.flatten(2).transpose(1, 2)


class _ResamplerBlock(nn.Module):
    """Pre-norm attention of the queries over [patches; queries], then an MLP; each added back to the queries."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_queries, self.norm_context = nn.LayerNorm(width), nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [B, T, W] → [B, heads, T, W / heads]

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        normed = self.norm_queries(queries)
        keys, values = self.key_value(torch.cat([self.norm_context(context), normed], dim=1)).chunk(2, dim=-1)
        attended = nn.functional.scaled_dot_product_attention(
            self._heads(self.query(normed)), self._heads(keys), self._heads(values))
        queries = queries + self.out(attended.transpose(1, 2).flatten(2))
        return queries + self.mlp(self.norm_mlp(queries))


class ResamplerProjector(_Projector):
    """A perceiver resampler: ``num_queries`` learned queries, ``depth`` blocks of attention over the patch features
    (projected to the LLM width by ``input``) and the queries themselves, and a final LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, *, num_queries: int = 64, depth: int = 2, num_heads: int = 8,
                 mlp_ratio: int = 4, seed: int = 0) -> None:
        super().__init__(in_dim, out_dim, seed)
        if min(num_queries, depth, num_heads, mlp_ratio) < 1:
            raise ValueError(f"num_queries, depth, num_heads and mlp_ratio must be >= 1, got {num_queries}, {depth}, "
                             f"{num_heads}, {mlp_ratio}")
        if out_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the LLM width ({out_dim})")
        self.num_queries = num_queries
        self.input = nn.Linear(in_dim, out_dim)
        self.queries = nn.Parameter(torch.empty(num_queries, out_dim))
        self.blocks = nn.ModuleList(_ResamplerBlock(out_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(out_dim)

    def num_tokens(self, num_patches: int) -> int:
        return self.num_queries

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        context = self.input(features)
        queries = self.queries.expand(features.shape[0], -1, -1)
        for block in self.blocks:
            queries = block(queries, context)
        return self.norm(queries)

    def init_module(self, module: nn.Module, name: str) -> None:
        """Materialisation hook: the queries ~ N(0, 1) (they enter each block through a LayerNorm); every layer
        takes torch's own initialisation."""
        if module is self:
            nn.init.normal_(self.queries)
        else:
            module.reset_parameters()
