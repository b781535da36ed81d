"""Projector specs. Torch-free: the modules are imported inside ``build``, constructed on the meta device and
materialised at once unless the caller is building on meta itself (``prism_core.build(spec, device="meta")``).

``linear``, ``gelu-mlp`` and ``fused-gelu-mlp`` make one image token per patch (the original's projectors);
``pixel-shuffle-mlp``, ``pool-mlp`` and ``resampler`` make fewer (or a fixed number), and say how many with
``num_tokens`` — here, without torch, and on the module, with the same functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import attrs

from prism_core.protocols import patch_grid
from prism_core.spec import ProjectorSpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_projectors.modules import (
        FusedGeluMLPProjector,
        GeluMLPProjector,
        LinearProjector,
        PixelShuffleMLPProjector,
        PoolMLPProjector,
        ResamplerProjector,
    )


@attrs.frozen(kw_only=True)
class LinearProjectorSpec(ProjectorSpec):
    """One ``Linear(vision_dim, llm_dim)`` (arch specifier ``linear``)."""

    kind: ClassVar[str] = "linear"
    presets: ClassVar[dict[str, dict]] = {"linear": {}}

    bias: bool = spec_field(True, help="learn a bias (the original does)")

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> LinearProjector:
        from prism_core.materialize import build_on_meta
        from prism_plugin_projectors.modules import LinearProjector

        return build_on_meta(lambda: LinearProjector(in_dim, out_dim, bias=self.bias, seed=seed))


@attrs.frozen(kw_only=True)
class GeluMLPProjectorSpec(ProjectorSpec):
    """``Linear(v, l) → GELU → Linear(l, l)`` (arch specifiers ``gelu-mlp`` and ``no-align+gelu-mlp``)."""

    kind: ClassVar[str] = "gelu-mlp"
    presets: ClassVar[dict[str, dict]] = {"gelu-mlp": {}}

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> GeluMLPProjector:
        from prism_core.materialize import build_on_meta
        from prism_plugin_projectors.modules import GeluMLPProjector

        return build_on_meta(lambda: GeluMLPProjector(in_dim, out_dim, seed=seed))


@attrs.frozen(kw_only=True)
class FusedGeluMLPProjectorSpec(ProjectorSpec):
    """``Linear(v, 4v) → GELU → Linear(4v, l) → GELU → Linear(l, l)`` (``no-align+fused-gelu-mlp``)."""

    kind: ClassVar[str] = "fused-gelu-mlp"
    presets: ClassVar[dict[str, dict]] = {"fused-gelu-mlp": {}}

    hidden_factor: int = spec_field(4, at_least=1,
                                    help="first hidden width = hidden_factor × vision width (4 in the original)")

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> FusedGeluMLPProjector:
        from prism_core.materialize import build_on_meta
        from prism_plugin_projectors.modules import FusedGeluMLPProjector

        return build_on_meta(
            lambda: FusedGeluMLPProjector(in_dim, out_dim, hidden_factor=self.hidden_factor, seed=seed))


# -- projectors that change the number of image tokens ---------------------------------------------------------------
def grid_side(num_patches: int) -> int:
    """Side of the square patch grid (``ValueError`` for a count that is not a square)."""
    grid = patch_grid(num_patches)
    if grid is None:
        raise ValueError(f"needs a square patch grid, but the vision backbone makes {num_patches} patches")
    return grid[0]


def blocks_per_side(side: int, window: int, *, partial: bool) -> int:
    """Windows of ``window`` patches along a grid side: ``⌈side / window⌉`` when a partial last window is kept
    (padded or averaged over what it covers), else ``side / window``, which must then be whole."""
    if partial:
        return -(-side // window)
    if side % window:
        raise ValueError(f"{window} does not divide the {side}×{side} patch grid")
    return side // window


def pixel_shuffle_tokens(num_patches: int, ratio: int, pad_grid: bool) -> int:
    return blocks_per_side(grid_side(num_patches), ratio, partial=pad_grid) ** 2


def pooled_tokens(num_patches: int, stride: int) -> int:
    return blocks_per_side(grid_side(num_patches), stride, partial=True) ** 2


def _square_grid_problem(num_patches: int) -> Iterator[tuple[str, str]]:
    if patch_grid(num_patches) is None:
        yield "", f"needs a square patch grid, but the vision backbone makes {num_patches} patches"


@attrs.frozen(kw_only=True)
class PixelShuffleMLPProjectorSpec(ProjectorSpec):
    """Pixel shuffle (space-to-depth) of the patch grid, then ``gelu-mlp``: each ``ratio × ratio`` block of patches
    becomes one token ``ratio²`` times as wide, so an ``S × S`` grid gives ``(S / ratio)²`` tokens (nanoVLM and
    Idefics3 shuffle this way)."""

    kind: ClassVar[str] = "pixel-shuffle-mlp"
    presets: ClassVar[dict[str, dict]] = {"pixel-shuffle-mlp": {}}

    ratio: int = spec_field(2, at_least=1, help="side of the block of patches merged into one token: ratio² "
                                                "times fewer tokens, each ratio² times as wide")
    pad_grid: bool = spec_field(False, help="pad a grid the ratio does not divide with zero patches (at the bottom "
                                            "and right) instead of refusing it: ⌈S / ratio⌉² tokens")

    def num_tokens(self, num_patches: int) -> int:
        return pixel_shuffle_tokens(num_patches, self.ratio, self.pad_grid)

    def patch_problems(self, num_patches: int) -> Iterator[tuple[str, str]]:
        if self.ratio < 1:
            return  # the range check says so
        yield from _square_grid_problem(num_patches)
        grid = patch_grid(num_patches)
        if grid is not None and grid[0] % self.ratio and not self.pad_grid:
            side, blocks = grid[0], blocks_per_side(grid[0], self.ratio, partial=True)
            tokens = f"{blocks * blocks} token{'s' if blocks > 1 else ''}"
            yield "ratio", (f"{self.ratio} does not divide the {side}×{side} patch grid of the vision backbone: "
                            f"choose a ratio that divides {side}, or pad_grid = true (pads the grid to "
                            f"{blocks * self.ratio}×{blocks * self.ratio}: {tokens})")

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> PixelShuffleMLPProjector:
        from prism_core.materialize import build_on_meta
        from prism_plugin_projectors.modules import PixelShuffleMLPProjector

        return build_on_meta(lambda: PixelShuffleMLPProjector(in_dim, out_dim, ratio=self.ratio,
                                                              pad_grid=self.pad_grid, seed=seed))


@attrs.frozen(kw_only=True)
class PoolMLPProjectorSpec(ProjectorSpec):
    """Average pooling of the patch grid in ``stride × stride`` windows, then ``gelu-mlp`` and a depthwise 3×3
    convolution added back (the positional enhancement of MobileVLM V2's LDP): an ``S × S`` grid gives
    ``⌈S / stride⌉²`` tokens; a last, partial window averages the patches it covers. It pools before the MLP, so
    the MLP runs on the fewer tokens (LDPv2 runs it before pooling)."""

    kind: ClassVar[str] = "pool-mlp"
    presets: ClassVar[dict[str, dict]] = {"pool-mlp": {}}

    stride: int = spec_field(2, at_least=1, help="side of the window of patches averaged into one token")
    positional_conv: bool = spec_field(True, help="add a depthwise 3×3 convolution of the pooled token grid to "
                                                  "each token (LDPv2's positional enhancement)")

    def num_tokens(self, num_patches: int) -> int:
        return pooled_tokens(num_patches, self.stride)

    def patch_problems(self, num_patches: int) -> Iterator[tuple[str, str]]:
        yield from _square_grid_problem(num_patches)

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> PoolMLPProjector:
        from prism_core.materialize import build_on_meta
        from prism_plugin_projectors.modules import PoolMLPProjector

        return build_on_meta(lambda: PoolMLPProjector(in_dim, out_dim, stride=self.stride,
                                                      positional_conv=self.positional_conv, seed=seed))


@attrs.frozen(kw_only=True)
class ResamplerProjectorSpec(ProjectorSpec):
    """A small perceiver resampler: ``num_queries`` learned queries attend to the patch features (projected to the
    LLM width) and to themselves through ``depth`` pre-norm blocks, so every image gives ``num_queries`` tokens
    whatever its grid (Flamingo's and Idefics2's resamplers; BLIP-2's Q-Former also has a fixed count)."""

    kind: ClassVar[str] = "resampler"
    presets: ClassVar[dict[str, dict]] = {"resampler": {}}

    num_queries: int = spec_field(64, at_least=1, help="learned queries: the image tokens per image")
    depth: int = spec_field(2, at_least=1, help="cross-attention blocks")
    num_heads: int = spec_field(8, at_least=1, help="attention heads; must divide the LLM width")
    mlp_ratio: int = spec_field(4, at_least=1, help="hidden width of each block's MLP, in LLM widths")

    def num_tokens(self, num_patches: int) -> int:
        return self.num_queries

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> ResamplerProjector:
        from prism_core.materialize import build_on_meta
        from prism_plugin_projectors.modules import ResamplerProjector

        return build_on_meta(lambda: ResamplerProjector(
            in_dim, out_dim, num_queries=self.num_queries, depth=self.depth, num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio, seed=seed))
