"""The timm ViT featurizer: patch features of the second-to-last block, computed without the last block.

The original ran every block through timm's ``get_intermediate_layers`` and threw the last one away. Here the
model is truncated as it is built on the meta device (``prune_intermediate_layers``: later blocks, final norm and
head are removed) and only the kept weights are ever materialised, so ``forward`` is a plain ``forward_features``
of the kept blocks with the prefix tokens dropped.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from prism_core.materialize import build_on_meta, building_on_meta
from prism_plugin_timm_vision.transforms import PrismImageTransform
from prism_plugin_timm_vision.weights import pretrained_weights_file, read_weights_file

if TYPE_CHECKING:
    from prism_plugin_timm_vision.spec import TimmViTSpecBase


class TimmViTBackbone(nn.Module):
    """A truncated timm ViT (``featurizer``) with its image transform; satisfies ``VisionBackbone``.

    Materialisation hooks (``prism_core.materialize``): ``initial_state()`` is the spec's weights (timm's pretrained
    ones or a safetensors file), ``init_module`` timm's own ViT initialisation, seeded by ``spec.seed``.
    """

    def __init__(self, featurizer: nn.Module, image_transform: PrismImageTransform, image_size: int,
                 spec: TimmViTSpecBase | None = None, weights_file: Path | None = None) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.image_transform = image_transform
        self.image_size = image_size
        self.embed_dim: int = featurizer.embed_dim
        self.num_patches: int = featurizer.patch_embed.num_patches
        self.num_prefix_tokens: int = featurizer.num_prefix_tokens
        self.shard_block_classes: tuple[type, ...] = tuple(dict.fromkeys(type(b) for b in featurizer.blocks))
        self.init_seed: int = spec.seed if spec is not None else 0
        self._spec = spec
        self._weights_file = weights_file
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

    # -- materialisation ---------------------------------------------------------------------------------------
    def initial_state(self) -> dict[str, torch.Tensor]:
        """The weights the spec names, memory-mapped and adapted to the truncated featurizer; ``{}`` for random."""
        spec = self._spec
        if spec is None or spec.weights == "random":
            return {}
        file = self._weights_file or weights_file_for(spec)
        with torch.device("meta"):  # timm's checkpoint filter and the strict check want the untruncated model
            full = create_timm_model(spec)
        state = read_weights_file(full, file)
        kept = self.featurizer.state_dict().keys()
        return {f"featurizer.{k}": v for k, v in state.items() if k in kept}

    def init_module(self, module: nn.Module, name: str) -> None:
        """timm's default ViT initialisation of one module (what ``VisionTransformer.init_weights`` does to it;
        ``fix_init``'s per-depth rescaling and the jax/moco modes are not applied)."""
        from timm.layers import trunc_normal_

        if module is self.featurizer:  # its own tokens; every layer below is a module of its own
            if module.pos_embed is not None:
                trunc_normal_(module.pos_embed, std=0.02)
            for token in ("cls_token", "reg_token"):
                if getattr(module, token, None) is not None:
                    nn.init.normal_(getattr(module, token), std=1e-6)
        elif isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif hasattr(module, "init_weights"):
            module.init_weights()
        else:
            module.reset_parameters()  # norms, layer scales, the patch embedding's convolution


def build_timm_backbone(spec: TimmViTSpecBase) -> TimmViTBackbone:
    """Create the timm model on the meta device, truncate it to the feature block and attach its transform; then,
    unless the caller builds on meta, materialise it (the spec's weights, else timm's seeded initialisation)."""
    weights_file = None
    if not building_on_meta() and spec.weights != "random":
        weights_file = weights_file_for(spec)  # before building: offline misses fail fast

    def make() -> TimmViTBackbone:
        featurizer = create_featurizer(spec)
        return TimmViTBackbone(featurizer, image_transform_for(spec, featurizer), spec.image_size, spec,
                               weights_file)

    return build_on_meta(make)


def weights_file_for(spec: TimmViTSpecBase) -> Path:
    return pretrained_weights_file(spec.timm_name) if spec.weights == "pretrained" else Path(spec.weights)


def create_timm_model(spec: TimmViTSpecBase) -> nn.Module:
    """The untruncated timm model the spec describes (no weights read: build it on meta)."""
    import timm

    _check_model_name(spec.timm_name)
    try:
        try:  # no initialisation at construction: on meta it is slow and holds no values (init_module gives them)
            model = timm.create_model(spec.timm_name, pretrained=False, weight_init="skip", **spec.timm_kwargs())
        except TypeError:  # a ViT family without that option initialises as it is built: only slower
            model = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs())
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ValueError(f"vision backbone {spec.kind!r}: timm cannot build {spec.timm_name!r} with "
                         f"{spec.timm_kwargs()}: {type(exc).__name__}: {exc}") from exc
    needed = ("blocks", "patch_embed", "num_prefix_tokens", "forward_features", "prune_intermediate_layers")
    if not all(hasattr(model, name) for name in needed):
        raise ValueError(f"vision backbone {spec.kind!r}: timm model {spec.timm_name!r} is a "
                         f"{type(model).__name__}, not a ViT with transformer blocks and patch tokens")
    return model


def create_featurizer(spec: TimmViTSpecBase) -> nn.Module:
    """The timm model truncated after the second-to-last block (final norm and head removed), in eval mode."""
    model = create_timm_model(spec)
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
