"""Export a prism model to a transformers ``LlavaForConditionalGeneration`` checkpoint plus ``LlavaProcessor``.

Llava can express: one vision tower that transformers can instantiate (SigLIP → ``SiglipVisionModel``, OpenAI CLIP
→ ``CLIPVisionModel``; timm weights are mapped onto those classes), a 2-layer GELU MLP projector (``gelu-mlp``), any
causal LM, and one image spliced as a run of ``<image>`` tokens. prism puts the patches right after BOS, so the
exported prompt is ``<s><image>…<image>{text}`` — the same sequence, hence the same logits.

Not expressible, with the reason in the error: fused towers (Llava has one ``vision_tower``), the 3-layer
``fused-gelu-mlp`` and the 1-layer ``linear`` projector (Llava's projector is always Linear → act → Linear),
projectors that change the number of image tokens (``pixel-shuffle-mlp``, ``pool-mlp``, ``resampler``: Llava
splices one embedding per patch), towers with register tokens, LayerScale or normalised q/k (DINOv2: no exact HF
mapping here). The tower's feature layer is found numerically (the prism features must equal one hidden state of the
mapped HF tower), so a mapping that is not exact is refused instead of exported silently wrong.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

IMAGE_TOKEN = "<image>"
TOLERANCE = 1e-4


class ExportError(ValueError):
    """The composition cannot be written as a Llava checkpoint; the message says why and what would work."""


def _timm_vit(vision: nn.Module) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    towers = [m for m in vision.modules() if isinstance(m, VisionTransformer)]
    if len(towers) != 1:
        raise ExportError(
            f"Llava has a single vision_tower but this vision backbone holds {len(towers)} ViTs "
            f"({type(vision).__name__}); fused towers need a custom class (e.g. OpenVLA-style "
            f"PrismaticForConditionalGeneration) — export a single-tower model instead")
    return towers[0]


def _activation_name(vit: nn.Module) -> str:
    act = vit.blocks[0].mlp.act
    if isinstance(act, nn.GELU):
        return "gelu_pytorch_tanh" if act.approximate == "tanh" else "gelu"
    if type(act).__name__ == "QuickGELU":
        return "quick_gelu"
    raise ExportError(f"the ViT's MLP activation {type(act).__name__} has no transformers equivalent")


def _check_plain_blocks(vit: nn.Module) -> None:
    block = vit.blocks[0]
    for name in ("ls1", "ls2", "drop_path1"):
        sub = getattr(block, name, None)
        if sub is not None and not isinstance(sub, nn.Identity) and name.startswith("ls"):
            raise ExportError("the ViT uses LayerScale, which SigLIP/CLIP towers in transformers do not have; "
                              "no exact Llava export (a Dinov2-based custom vision tower would be needed)")
    if not isinstance(getattr(block.attn, "q_norm", nn.Identity()), nn.Identity):
        raise ExportError("the ViT normalises q/k per head; SigLIP/CLIP towers in transformers do not")
    if getattr(vit, "num_reg_tokens", 0):
        raise ExportError(f"the ViT has {vit.num_reg_tokens} register tokens; Llava's towers (SigLIP/CLIP) have none")


def _vision_config(vit: nn.Module) -> tuple[Any, dict[str, torch.Tensor], str]:
    """(HF vision config, HF-named state dict, select strategy) for a timm ViT."""
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    _check_plain_blocks(vit)
    width = vit.embed_dim
    patch = vit.patch_embed.patch_size[0]
    image = vit.patch_embed.img_size[0]
    common = dict(hidden_size=width, intermediate_size=vit.blocks[0].mlp.fc1.out_features,
                  num_hidden_layers=len(vit.blocks), num_attention_heads=vit.blocks[0].attn.num_heads,
                  image_size=image, patch_size=patch, hidden_act=_activation_name(vit),
                  layer_norm_eps=vit.blocks[0].norm1.eps, num_channels=3)
    sd = vit.state_dict()
    out: dict[str, torch.Tensor] = {}
    has_cls = getattr(vit, "cls_token", None) is not None
    if has_cls:  # OpenAI CLIP layout: class token, pre-norm, bias-free patch conv
        if isinstance(vit.norm_pre, nn.Identity) or "patch_embed.proj.bias" in sd:
            raise ExportError("a ViT with a class token maps to CLIPVisionModel only with CLIP's pre-norm and "
                              "bias-free patch embedding; this one differs")
        config = CLIPVisionConfig(**common)
        out["embeddings.class_embedding"] = sd["cls_token"].reshape(width)
        out["embeddings.patch_embedding.weight"] = sd["patch_embed.proj.weight"]
        out["embeddings.position_embedding.weight"] = sd["pos_embed"].reshape(-1, width)
        out["pre_layrnorm.weight"], out["pre_layrnorm.bias"] = sd["norm_pre.weight"], sd["norm_pre.bias"]
        strategy = "default"
    else:  # SigLIP layout: no class token, biased patch conv, no pre-norm
        if not isinstance(vit.norm_pre, nn.Identity):
            raise ExportError("a ViT without a class token maps to SiglipVisionModel, which has no pre-norm")
        config = SiglipVisionConfig(**common, vision_use_head=False)
        out["embeddings.patch_embedding.weight"] = sd["patch_embed.proj.weight"]
        out["embeddings.patch_embedding.bias"] = sd["patch_embed.proj.bias"]
        out["embeddings.position_embedding.weight"] = sd["pos_embed"].reshape(-1, width)
        strategy = "full"
    for i in range(len(vit.blocks)):
        src, dst = f"blocks.{i}.", f"encoder.layers.{i}."
        q, k, v = sd[src + "attn.qkv.weight"].chunk(3, dim=0)
        qb, kb, vb = sd[src + "attn.qkv.bias"].chunk(3, dim=0)
        for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            out[dst + f"self_attn.{name}.weight"], out[dst + f"self_attn.{name}.bias"] = w, b
        renames = {"attn.proj": "self_attn.out_proj", "norm1": "layer_norm1", "norm2": "layer_norm2",
                   "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
        for a, b_ in renames.items():
            for p in ("weight", "bias"):
                out[dst + f"{b_}.{p}"] = sd[src + f"{a}.{p}"]
    if isinstance(vit.norm, nn.LayerNorm):
        out["post_layernorm.weight"], out["post_layernorm.bias"] = sd["norm.weight"], sd["norm.bias"]
    else:  # prism prunes the final norm (features come from an earlier block): an identity norm keeps HF complete
        out["post_layernorm.weight"], out["post_layernorm.bias"] = torch.ones(width), torch.zeros(width)
    return config, out, strategy


def _load_by_suffix(module: nn.Module, named: dict[str, torch.Tensor], what: str) -> None:
    target = module.state_dict()
    mapped = {}
    for key, value in named.items():
        hits = [t for t in target if t == key or t.endswith("." + key)]
        if len(hits) != 1:
            raise ExportError(f"{what}: weight {key!r} matches {len(hits)} parameters of {type(module).__name__}")
        mapped[hits[0]] = value
    missing = [t for t in target if t not in mapped]
    if missing:
        raise ExportError(f"{what}: {type(module).__name__} parameters left without weights: {missing[:5]}")
    module.load_state_dict(mapped, strict=True)


def _causal_lm(llm_backbone: nn.Module) -> nn.Module:
    from transformers import PreTrainedModel

    models = [m for m in llm_backbone.modules() if isinstance(m, PreTrainedModel) and hasattr(m, "lm_head")]
    if not models:
        raise ExportError(f"the LLM backbone {type(llm_backbone).__name__} holds no transformers causal LM")
    return models[0]


def _projector_layers(vlm: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    projector = vlm.projector
    kind = getattr(getattr(vlm.spec, "projector", None), "kind", None) or type(projector).__name__
    tokens, patches = vlm.num_image_tokens, vlm.num_patches
    if tokens != patches:
        raise ExportError(
            f"Llava splices one projected embedding per vision patch ({patches}), but this projector ({kind}) makes "
            f"{tokens} image tokens of them: Llava has no pixel shuffle, pooling or resampling step to express "
            f"that; export a model trained with projector kind 'gelu-mlp'")
    linears = [m for m in projector.modules() if isinstance(m, nn.Linear)]
    gelus = [m for m in projector.modules() if isinstance(m, nn.GELU)]
    others = sorted({type(m).__name__ for m in projector.modules()
                     if not isinstance(m, (nn.Linear, nn.GELU)) and any(True for _ in m.parameters(recurse=False))})
    if len(linears) == 2 and len(gelus) == 1 and gelus[0].approximate == "none" and not others \
            and linears[0].in_features == vlm.vision_backbone.embed_dim:
        return linears[0], linears[1]
    extra = f" and {', '.join(others)} layers with weights" if others else ""
    raise ExportError(
        f"Llava's projector is exactly Linear → GELU → Linear on the vision width; this projector ({kind}) has "
        f"{len(linears)} linear layers{extra} — the 'fused-gelu-mlp' (3 layers) and 'linear' (1 layer) projectors "
        f"need a custom class; retrain or finetune with projector kind 'gelu-mlp' to export to Llava")


def _image_token_id(tokenizer: Any, vocab_rows: int) -> tuple[int, bool]:
    """Add ``<image>``; its id lands on a padding row of the embedding matrix when one is free (no resize)."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return token_id, token_id >= vocab_rows


def build_llava(vlm: nn.Module) -> tuple[nn.Module, Any, int]:
    """(LlavaForConditionalGeneration with prism's weights, tokenizer with ``<image>``, number of image tokens)."""
    import copy

    from transformers import LlavaConfig, LlavaForConditionalGeneration

    vit = _timm_vit(vlm.vision_backbone)
    linear_1, linear_2 = _projector_layers(vlm)
    causal_lm = _causal_lm(vlm.llm_backbone)
    vision_config, vision_weights, strategy = _vision_config(vit)
    tokenizer = copy.deepcopy(vlm.llm_backbone.tokenizer)
    vocab_rows = causal_lm.get_input_embeddings().weight.shape[0]
    image_token_id, needs_resize = _image_token_id(tokenizer, vocab_rows)
    text_config = copy.deepcopy(causal_lm.config)
    if needs_resize:
        text_config.vocab_size = image_token_id + 1
    num_patches = vlm.vision_backbone.num_patches
    config = LlavaConfig(vision_config=vision_config, text_config=text_config, image_token_index=image_token_id,
                         projector_hidden_act="gelu", vision_feature_select_strategy=strategy,
                         vision_feature_layer=-2, multimodal_projector_bias=linear_1.bias is not None,
                         image_seq_length=num_patches)
    config.tie_word_embeddings = getattr(causal_lm.config, "tie_word_embeddings", False)
    llava = LlavaForConditionalGeneration(config).eval()
    _load_by_suffix(llava.model.vision_tower, vision_weights, "vision tower")
    llava.model.multi_modal_projector.linear_1.load_state_dict(linear_1.state_dict())
    llava.model.multi_modal_projector.linear_2.load_state_dict(linear_2.state_dict())
    inner = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else causal_lm.model
    lm_state = inner.state_dict()
    head = causal_lm.lm_head.state_dict()
    if needs_resize:  # one new row for <image>: never predicted (−inf-like logit via a zero row is not enough)
        llava.resize_token_embeddings(image_token_id + 1)
    for key in ("embed_tokens.weight",):
        if key in lm_state and lm_state[key].shape[0] < image_token_id + 1:
            grown = torch.zeros(image_token_id + 1, lm_state[key].shape[1], dtype=lm_state[key].dtype)
            grown[: lm_state[key].shape[0]] = lm_state[key]
            lm_state[key] = grown
    llava.model.language_model.load_state_dict(lm_state, strict=True)
    if "weight" in head and head["weight"].shape[0] < image_token_id + 1:
        grown = torch.zeros(image_token_id + 1, head["weight"].shape[1], dtype=head["weight"].dtype)
        grown[: head["weight"].shape[0]] = head["weight"]
        head["weight"] = grown
    llava.lm_head.load_state_dict(head, strict=True)
    llava.generation_config = copy.deepcopy(causal_lm.generation_config)
    _select_feature_layer(llava, vlm, vit)
    return llava, tokenizer, num_patches


@torch.no_grad()
def _select_feature_layer(llava: nn.Module, vlm: nn.Module, vit: nn.Module) -> None:
    """Find the hidden state of the HF tower that equals prism's features; refuse if none does."""
    size = vit.patch_embed.img_size
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    ours = vlm.vision_backbone(pixels).float()
    outputs = llava.model.vision_tower(pixels, output_hidden_states=True)
    drop = 1 if llava.config.vision_feature_select_strategy == "default" else 0
    for layer in range(-1, -len(outputs.hidden_states) - 1, -1):
        theirs = outputs.hidden_states[layer][:, drop:].float()
        if theirs.shape == ours.shape and torch.allclose(theirs, ours, atol=TOLERANCE, rtol=TOLERANCE):
            llava.config.vision_feature_layer = layer
            return
    raise ExportError("the mapped transformers vision tower reproduces none of its hidden states as prism's "
                      "patch features, so this tower cannot be mapped exactly onto a transformers class")


#: PIL resample codes for prism's interpolation names.
PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}


def _image_processor(vit: nn.Module, vlm: nn.Module, allow_letterbox: bool) -> Any:
    """A CLIPImageProcessor doing what prism's ``image_transform`` does (its resize strategy, interpolation,
    crop_pct, mean and std); falls back to the timm model's pretrained config for a transform without them.

    transformers 5 picks the image processor's backend when loading, not from the saved config: the default
    (torchvision) resizes differently from prism's PIL resize, by up to one uint8 level per pixel; load with
    ``LlavaProcessor.from_pretrained(out, backend="pil")`` to reproduce prism's pixels exactly.
    """
    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # transformers < 5: the plain class is the PIL one
        from transformers import CLIPImageProcessor

    cfg = dict(getattr(vit, "pretrained_cfg", None) or {})
    transform = getattr(vlm.vision_backbone, "image_transform", None)
    strategy = getattr(transform, "resize", None) or getattr(getattr(vlm.spec, "vision", None), "resize", None)
    strategy = strategy or "resize-naive"
    mean = getattr(transform, "mean", None) or cfg.get("mean", (0.5, 0.5, 0.5))
    std = getattr(transform, "std", None) or cfg.get("std", (0.5, 0.5, 0.5))
    interpolation = getattr(transform, "interpolation", None) or cfg.get("interpolation") or "bicubic"
    crop_pct = float(getattr(transform, "crop_pct", None) or 1.0)
    if strategy == "letterbox" and not allow_letterbox:
        raise ExportError("the model was trained with letterbox padding, which transformers image processors cannot "
                          "do; pass --allow-letterbox (then pad images to a square with the mean colour yourself)")
    if interpolation not in PIL_RESAMPLE:
        raise ExportError(f"image interpolation {interpolation!r} has no PIL resample code")
    size = vit.patch_embed.img_size[0]
    crop = strategy in ("resize-crop", "letterbox")
    resize_to = {"shortest_edge": math.floor(size / crop_pct)} if crop else {"height": size, "width": size}
    return CLIPImageProcessor(
        do_resize=True, size=resize_to,
        resample=PIL_RESAMPLE[interpolation], do_center_crop=crop, crop_size={"height": size, "width": size},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(mean), image_std=list(std),
        do_convert_rgb=True,
    )


def export_llava(model: Any, out: str | Path, *, hf_token: str | None = None, allow_letterbox: bool = False) -> Path:
    """Write ``out/`` with ``config.json``, ``model.safetensors``, tokenizer and processor files."""
    from transformers import LlavaProcessor

    if isinstance(model, (str, Path)):
        import prism_core

        model = prism_core.load(str(model), hf_token=hf_token)
    llava, tokenizer, _ = build_llava(model)
    vit = _timm_vit(model.vision_backbone)
    strategy = llava.config.vision_feature_select_strategy
    processor = LlavaProcessor(
        image_processor=_image_processor(vit, model, allow_letterbox), tokenizer=tokenizer,
        patch_size=vit.patch_embed.patch_size[0], vision_feature_select_strategy=strategy,
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1 if strategy == "default" else 0,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    llava.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
