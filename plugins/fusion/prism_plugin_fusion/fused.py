"""A fused vision backbone: members side by side, patch features concatenated channel-wise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class FusedImageTransform:
    """One image → ``{member key: tensor}``, each through its member's own transform. Picklable."""

    is_prismatic = True

    def __init__(self, transforms: Mapping[str, Any]) -> None:
        self.transforms = dict(transforms)

    def __call__(self, image: Any) -> dict[str, torch.Tensor]:
        return {key: transform(image) for key, transform in self.transforms.items()}

    def __repr__(self) -> str:
        return f"FusedImageTransform({self.transforms!r})"


class FusedVisionBackbone(nn.Module):
    """Satisfies ``VisionBackbone`` with dict pixel values ``{key: [B, 3, H, W]}``."""

    def __init__(self, members: Mapping[str, nn.Module]) -> None:
        super().__init__()
        counts = {key: member.num_patches for key, member in members.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"fused backbone members must produce the same number of patches, got {counts}")
        self.members = nn.ModuleDict(dict(members))
        first = next(iter(members.values()))
        self.num_patches: int = first.num_patches
        self.image_size: int = first.image_size  # the first member's (the original used the DINO branch's)
        self.embed_dim: int = sum(member.embed_dim for member in members.values())
        self.image_transform = FusedImageTransform({key: m.image_transform for key, m in members.items()})
        classes = (cls for member in members.values() for cls in member.shard_block_classes)
        self.shard_block_classes: tuple[type, ...] = tuple(dict.fromkeys(classes))
        self._trainable = True

    def forward(self, pixel_values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{key: [B, 3, H, W]}`` → ``[B, num_patches, sum of member widths]``, members in order."""
        if not isinstance(pixel_values, Mapping):
            raise TypeError(f"a fused backbone takes {{{', '.join(self.members)}: tensor}}, "
                            f"got {type(pixel_values).__name__}")
        missing = [key for key in self.members if key not in pixel_values]
        if missing:
            raise KeyError(f"pixel values lack member key(s) {', '.join(missing)} (have {', '.join(pixel_values)})")
        return torch.cat([member(pixel_values[key]) for key, member in self.members.items()], dim=2)

    def set_trainable(self, trainable: bool) -> None:
        """``False`` freezes every member and keeps them in eval mode (even under ``model.train()``)."""
        self._trainable = trainable
        for member in self.members.values():
            member.set_trainable(trainable)
        self.requires_grad_(trainable)
        super().train(trainable)

    def train(self, mode: bool = True) -> FusedVisionBackbone:
        return super().train(mode and self._trainable)
