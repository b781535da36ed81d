"""Every released Prismatic model, at full size on the meta device: the original checkpoint layout maps onto prism.

The original layout is rebuilt here independently of the prism plugins: the LLM as the transformers causal LM the
original wrapped (``llm.`` prefix, vocabulary padded to a multiple of 64 after adding PAD), the projector as
``projector.{0,2[,4]}``, and the vision featurizer(s) as the full timm ViT the original created (``num_classes=0``,
every block, the final norm and SigLIP's attention pool). Meta tensors hold no data, so this is fast.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from prism_plugin_prismatic.catalog import MODELS
from prism_plugin_prismatic.original import PrismaticLoadError, map_checkpoint, model_spec_from_config

#: vision_backbone_id → [(checkpoint prefix, timm name, image size)] of the original featurizer(s).
ORIGINAL_VISION = {
    "clip-vit-l": [("featurizer", "vit_large_patch14_clip_224.openai", 224)],
    "clip-vit-l-336px": [("featurizer", "vit_large_patch14_clip_336.openai", 336)],
    "siglip-vit-so400m": [("featurizer", "vit_so400m_patch14_siglip_224", 224)],
    "siglip-vit-so400m-384px": [("featurizer", "vit_so400m_patch14_siglip_384", 384)],
    "dinov2-vit-l": [("featurizer", "vit_large_patch14_reg4_dinov2.lvd142m", 224)],
    "in1k-vit-l": [("featurizer", "vit_large_patch16_224.augreg_in21k_ft_in1k", 224)],
    "dinoclip-vit-l-336px": [("dino_featurizer", "vit_large_patch14_reg4_dinov2.lvd142m", 336),
                             ("clip_featurizer", "vit_large_patch14_clip_336.openai", 336)],
    "dinosiglip-vit-so-224px": [("dino_featurizer", "vit_large_patch14_reg4_dinov2.lvd142m", 224),
                                ("siglip_featurizer", "vit_so400m_patch14_siglip_224", 224)],
    "dinosiglip-vit-so-384px": [("dino_featurizer", "vit_large_patch14_reg4_dinov2.lvd142m", 384),
                                ("siglip_featurizer", "vit_so400m_patch14_siglip_384", 384)],
}
_LLAMA7 = dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, intermediate_size=11008, vocab_size=32064)
_LLAMA13 = dict(_LLAMA7, hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                intermediate_size=13824)
_MISTRAL = dict(_LLAMA7, model_type="mistral", num_key_value_heads=8, intermediate_size=14336)
#: llm_backbone_id → the checkpointed causal LM's config (32001 tokens → 32064 rows; Phi-2: 50296 → 50304).
ORIGINAL_LLM = {
    "vicuna-v15-7b": _LLAMA7, "llama2-7b-pure": _LLAMA7, "llama2-7b-chat": _LLAMA7,
    "vicuna-v15-13b": _LLAMA13, "llama2-13b-pure": _LLAMA13, "llama2-13b-chat": _LLAMA13,
    "mistral-v0.1-7b-pure": _MISTRAL, "mistral-v0.1-7b-instruct": _MISTRAL,
    "phi-2-3b": dict(model_type="phi", hidden_size=2560, num_hidden_layers=32, num_attention_heads=32,
                     intermediate_size=10240, vocab_size=50304, partial_rotary_factor=0.4),
}


def _shapes(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


@functools.cache
def original_vision(vision_id: str) -> dict[str, torch.Tensor]:
    import timm

    out: dict[str, torch.Tensor] = {}
    with torch.device("meta"):
        for prefix, name, size in ORIGINAL_VISION[vision_id]:
            out.update(_shapes(timm.create_model(name, pretrained=False, num_classes=0, img_size=size), prefix))
    return out


@functools.cache
def original_llm(llm_id: str) -> dict[str, torch.Tensor]:
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(ORIGINAL_LLM[llm_id])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        return _shapes(AutoModelForCausalLM.from_config(config), "llm")


def original_projector(arch: str, vision_dim: int, llm_dim: int) -> dict[str, torch.Tensor]:
    dims = [(vision_dim, 4 * vision_dim), (4 * vision_dim, llm_dim), (llm_dim, llm_dim)] if "fused" in arch else \
        [(vision_dim, llm_dim), (llm_dim, llm_dim)]
    out = {}
    for i, (d_in, d_out) in enumerate(dims):
        out[f"projector.{2 * i}.weight"] = torch.empty(d_out, d_in, device="meta")
        out[f"projector.{2 * i}.bias"] = torch.empty(d_out, device="meta")
    return out


@functools.cache
def prism_vision(spec):
    with torch.device("meta"):
        return spec.build()


@functools.cache
def prism_llm(spec):
    return spec.build(device="meta")


def prism_parts(model_id: str) -> SimpleNamespace:
    spec = model_spec_from_config(MODELS[model_id]["config"])
    vision, llm = prism_vision(spec.vision), prism_llm(spec.llm)
    with torch.device("meta"):
        projector = spec.projector.build(vision.embed_dim, llm.embed_dim)
    return SimpleNamespace(vision_backbone=vision, projector=projector, llm_backbone=llm, spec=spec)


def test_all_49_released_models_are_covered():
    assert len(MODELS) == 49
    assert {m["config"]["vision_backbone_id"] for m in MODELS.values()} == set(ORIGINAL_VISION)
    assert {m["config"]["llm_backbone_id"] for m in MODELS.values()} == set(ORIGINAL_LLM)


@pytest.mark.parametrize("model_id", list(MODELS))
def test_original_checkpoint_maps_completely_onto_the_meta_model(model_id):
    config = MODELS[model_id]["config"]
    parts = prism_parts(model_id)
    assert all(p.is_meta for p in parts.llm_backbone.parameters())  # nothing was downloaded or allocated
    llm_state = original_llm(config["llm_backbone_id"])
    vision_dim = parts.vision_backbone.embed_dim
    llm_dim = llm_state["llm.model.embed_tokens.weight"].shape[1]
    checkpoint = {"projector": original_projector(config["arch_specifier"], vision_dim, llm_dim),
                  "llm_backbone": llm_state,
                  # the released files hold this only for full-finetune runs; every other run's vision weights are
                  # timm's, i.e. the same featurizer, so the mapping is checked for every backbone
                  "vision_backbone": original_vision(config["vision_backbone_id"])}
    mapped = map_checkpoint(parts, checkpoint)  # raises on an unmapped key, an unfilled parameter or a bad shape
    for attribute, tensors in mapped.items():
        target = getattr(parts, attribute).state_dict()
        assert set(tensors) == set(target), attribute
        assert all(tensors[k].shape == target[k].shape for k in target), attribute
    assert len(mapped["llm_backbone"]) == len(llm_state)


def test_a_wrong_size_checkpoint_is_refused_by_name():
    parts = prism_parts("prism-dinosiglip+7b")
    wrong = {"projector": original_projector("fused-gelu-mlp", 2176, 4096),
             "llm_backbone": original_llm("llama2-13b-pure")}
    with pytest.raises(PrismaticLoadError, match=r"'llm_backbone'.*shape mismatch"):
        map_checkpoint(parts, wrong)
