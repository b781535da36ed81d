"""The timm ViT featurizer: patch features of the second-to-last block, computed without the last block.

The original ran every block through timm's ``get_intermediate_layers`` and threw the last one away. Here the
model is truncated after its weights are loaded (``prune_intermediate_layers``: later blocks, final norm and head
are removed), so ``forward`` is a plain ``forward_features`` of the kept blocks with the prefix tokens dropped.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from prism_plugin_timm_vision.transforms import PrismImageTransform
from prism_plugin_timm_vision.weights import load_weights_file, pretrained_weights_file

if TYPE_CHECKING:
    from prism_plugin_timm_vision.spec import TimmViTSpecBase


class TimmViTBackbone(nn.Module):
    """A truncated timm ViT (``featurizer``) with its image transform; satisfies ``VisionBackbone``."""

    def __init__(self, featurizer: nn.Module, image_transform: PrismImageTransform, image_size: int) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.image_transform = image_transform
        self.image_size = image_size
        self.embed_dim: int = featurizer.embed_dim
        self.num_patches: int = featurizer.patch_embed.num_patches
        self.num_prefix_tokens: int = featurizer.num_prefix_tokens
        self.shard_block_classes: tuple[type, ...] = tuple(dict.fromkeys(type(b) for b in featurizer.blocks))
        self._trainable = True

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` → ``[B, num_patches, embed_dim]``."""
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"expected a [B, 3, H, W] tensor, got {type(pixel_values).__name__}")
        features = self.featurizer.forward_features(pixel_values)
        return features[:, self.num_prefix_tokens:]

    def set_trainable(self, trainable: bool) -> None:
        """``False`` freezes every parameter and keeps the module in eval mode (even under ``model.train()``)."""
        self._trainable = trainable
        self.requires_grad_(trainable)
        super().train(trainable)

    def train(self, mode: bool = True) -> TimmViTBackbone:
        return super().train(mode and self._trainable)


def build_timm_backbone(spec: TimmViTSpecBase) -> TimmViTBackbone:
    """Create the timm model, fill its weights, truncate it to the feature block and attach its transform.

    On the meta device no weights are read (meta tensors hold no data): materialise the module and load a
    checkpoint afterwards.
    """
    featurizer = create_featurizer(spec)
    return TimmViTBackbone(featurizer, image_transform_for(spec, featurizer), spec.image_size)


def create_featurizer(spec: TimmViTSpecBase) -> nn.Module:
    import timm

    _check_model_name(spec.timm_name)
    weights_file = None
    on_meta = torch.empty(()).device.type == "meta"
    if not on_meta and spec.weights == "pretrained":
        weights_file = pretrained_weights_file(spec.timm_name)  # before building: offline misses fail fast
    elif not on_meta and spec.weights != "random":
        weights_file = spec.weights
    try:
        with _seeded(spec.seed, enabled=not on_meta):
            model = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs())
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ValueError(f"vision backbone {spec.kind!r}: timm cannot build {spec.timm_name!r} with "
                         f"{spec.timm_kwargs()}: {type(exc).__name__}: {exc}") from exc
    needed = ("blocks", "patch_embed", "num_prefix_tokens", "forward_features", "prune_intermediate_layers")
    if not all(hasattr(model, name) for name in needed):
        raise ValueError(f"vision backbone {spec.kind!r}: timm model {spec.timm_name!r} is a "
                         f"{type(model).__name__}, not a ViT with transformer blocks and patch tokens")
    if weights_file is not None:
        load_weights_file(model, weights_file)
    model.prune_intermediate_layers([len(model.blocks) - 2], prune_norm=True, prune_head=True)
    model.eval()
    return model


def image_transform_for(spec: TimmViTSpecBase, model: nn.Module) -> PrismImageTransform:
    """The spec's resize strategy with the normalisation and interpolation of the model's pretrained config."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    crop_pct = spec.crop_pct
    if crop_pct is None:  # the original's fix: SigLIP and IN-1K resize to S, not S / crop_pct
        name = spec.timm_name.lower()
        crop_pct = 1.0 if ("siglip" in name or "in1k" in name) else float(cfg.get("crop_pct") or 1.0)
    return PrismImageTransform(
        image_size=spec.image_size,
        resize=spec.resize,
        mean=cfg.get("mean") or (0.485, 0.456, 0.406),
        std=cfg.get("std") or (0.229, 0.224, 0.225),
        interpolation=cfg.get("interpolation") or "bicubic",
        crop_pct=crop_pct,
    )


def _check_model_name(name: str) -> None:
    import timm

    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models("*vit*"), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}{hint}")


@contextlib.contextmanager
def _seeded(seed: int, enabled: bool = True) -> Iterator[None]:
    """Seed the random initialisation without disturbing the caller's RNG state."""
    if not enabled:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
