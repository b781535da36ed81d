"""The backbone itself: keeps the VisionBackbone contract of prism_core.protocols."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from prism_plugin_example.spec import ConvPatchSpec

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class ImageTransform:
    """PIL image of any mode and size → normalised ``[3, S, S]`` tensor."""

    is_prismatic = True  # the marker Prismatic's evaluation harness checks

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(self.image_size, self.image_size, 3).permute(2, 0, 1).float() / 255
        return (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


class ResidualConvBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, width)
        self.conv = nn.Conv2d(width, width, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(nn.functional.gelu(self.norm(x)))


class ConvPatchBackbone(nn.Module):
    def __init__(self, spec: ConvPatchSpec) -> None:
        super().__init__()
        self.image_size = spec.image_size
        self.embed_dim = spec.width
        self.num_patches = spec.num_patches
        self.image_transform = ImageTransform(spec.image_size)
        self.shard_block_classes = (ResidualConvBlock,)
        self.patch_embed = nn.Conv2d(3, spec.width, kernel_size=spec.patch_size, stride=spec.patch_size)
        self.blocks = nn.Sequential(*(ResidualConvBlock(spec.width) for _ in range(spec.depth)))
        if spec.weights is not None:
            from safetensors.torch import load_file

            self.load_state_dict(load_file(spec.weights))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        grid = self.blocks(self.patch_embed(pixel_values))  # [B, D, H/p, W/p]
        return grid.flatten(2).transpose(1, 2)  # [B, N, D], patches in row-major order

    def set_trainable(self, trainable: bool) -> None:
        self.requires_grad_(trainable)
        self.train(trainable)
