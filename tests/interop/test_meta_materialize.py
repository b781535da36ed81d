"""Every first-party component kind: built on the meta device it allocates nothing, and materialised it equals the
same spec built eagerly (same seed → equal tensors), from random initialisation and from weight files alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prism_plugin_fusion.spec import FusedSpec
from prism_plugin_hf_llm.spec import HFCausalLMSpec
from prism_plugin_llama2.spec import Llama2Spec
from prism_plugin_prismatic.catalog import MODELS
from prism_plugin_projectors.spec import (
    FusedGeluMLPProjectorSpec,
    GeluMLPProjectorSpec,
    LinearProjectorSpec,
    PixelShuffleMLPProjectorSpec,
    PoolMLPProjectorSpec,
    ResamplerProjectorSpec,
)
from prism_plugin_timm_vision.spec import TimmViTSpec
from safetensors.torch import save_file

from prism_core.materialize import materialize
from prism_core.registry import get_registry
from prism_core.spec import VisionBackboneSpec, structure_component
from prism_core.testing.toys import write_byte_tokenizer
from prism_core.types import Role

TINY_HF = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 96}


def vision(kind: str, preset: str, **fields) -> VisionBackboneSpec:
    return structure_component({"kind": kind, "preset": preset, **fields}, VisionBackboneSpec)


VISION = {"timm-vit": lambda: vision("timm-vit", "vit-tiny"), "siglip": lambda: vision("siglip", "siglip-tiny"),
          "dinov2": lambda: vision("dinov2", "dinov2-tiny", seed=3), "clip": lambda: vision("clip", "clip-tiny"),
          "fused": lambda: vision("fused", "dinosiglip-tiny")}
PROJECTORS = {"linear": LinearProjectorSpec(), "gelu-mlp": GeluMLPProjectorSpec(),
              "fused-gelu-mlp": FusedGeluMLPProjectorSpec(), "pixel-shuffle-mlp": PixelShuffleMLPProjectorSpec(),
              "pool-mlp": PoolMLPProjectorSpec(), "resampler": ResamplerProjectorSpec(num_queries=5)}


def tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and every buffer (non-persistent ones such as rotary frequencies included)."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def assert_same(eager: torch.nn.Module, materialised: torch.nn.Module) -> None:
    ours, theirs = tensors(materialised), tensors(eager)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype and torch.equal(ours[name], value), name


def meta_then_materialised(make):
    with torch.device("meta"):
        module = make()
    assert all(t.is_meta for t in tensors(module).values())  # nothing allocated, nothing read
    return materialize(module)


def test_every_first_party_kind_is_covered():
    registry = get_registry()
    first_party = {info.kind for role in (Role.VISION_BACKBONE, Role.PROJECTOR, Role.LLM_BACKBONE)
                   for info in registry.kinds(role) if info.distribution.startswith("prism-plugin-")}
    assert first_party == {*VISION, *PROJECTORS, "llama2", "hf-causal-lm"}


@pytest.mark.parametrize("kind", list(VISION))
def test_vision_backbones(kind):
    spec = VISION[kind]()
    assert_same(spec.build(), meta_then_materialised(spec.build))


@pytest.mark.parametrize("kind", list(PROJECTORS))
def test_projectors(kind):
    spec = PROJECTORS[kind]
    assert_same(spec.build(24, 40, seed=7), meta_then_materialised(lambda: spec.build(24, 40, seed=7)))


def test_llama2():
    spec = Llama2Spec.from_preset("llama-tiny", init_seed=5)
    assert_same(spec.build(), meta_then_materialised(spec.build))


def test_the_seed_decides_the_values_and_each_module_draws_its_own():
    def state(**fields):
        return Llama2Spec.from_preset("llama-tiny", **fields).build().state_dict()

    first, other = state(init_seed=1), state(init_seed=2)
    assert all(torch.equal(first[k], v) for k, v in state(init_seed=1).items())
    key = "llm.model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(first[key], other[key])
    # A value depends on (seed, name), not on how many modules came before it: one more layer changes no other.
    deeper = state(init_seed=1, num_hidden_layers=3)
    assert all(torch.equal(deeper[k], v) for k, v in first.items() if "layers.1." in k or "layers.0." in k)


def test_timm_weights_from_a_file(tmp_path):
    import timm

    spec = TimmViTSpec.from_preset("vit-tiny")
    source = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs())
    path = tmp_path / "vit.safetensors"
    save_file(source.state_dict(), str(path))
    with_file = TimmViTSpec.from_preset("vit-tiny", weights=str(path))
    eager = with_file.build()
    assert torch.equal(eager.featurizer.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert_same(eager, meta_then_materialised(with_file.build))


def test_fused_members_keep_their_own_weights_file(tmp_path):
    import timm

    members = FusedSpec.presets["dinosiglip-tiny"]["members"]
    dino = vision(**members[0])
    source = timm.create_model(dino.timm_name, pretrained=False, **dino.timm_kwargs()).state_dict()
    path = tmp_path / "dino.safetensors"
    save_file(source, str(path))
    spec = vision("fused", "dinosiglip-tiny", members=[{**members[0], "weights": str(path)}, members[1]])
    eager = spec.build()
    assert_same(eager, meta_then_materialised(spec.build))
    assert all(torch.equal(v, source[k.removeprefix("featurizer.")])
               for k, v in eager.members["dino"].state_dict().items())


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return write_byte_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.mark.parametrize("model_type", ["llama", "mistral", "phi"])
def test_hf_causal_lm_from_its_config(tokenizer_dir, model_type):
    spec = HFCausalLMSpec(model_type=model_type, tokenizer_id=str(tokenizer_dir), weights="random", init_seed=2,
                          **TINY_HF)
    assert_same(spec.build(), meta_then_materialised(spec.build))


def test_hf_causal_lm_pretrained_rows_kept_and_new_rows_seeded(tokenizer_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = write_byte_tokenizer(tmp_path / "mistral")
    config = AutoConfig.for_model("mistral", vocab_size=258, **TINY_HF)
    saved = AutoModelForCausalLM.from_config(config)
    saved.save_pretrained(directory)
    spec = HFCausalLMSpec(model_id=str(directory), prompt_format="mistral-instruct")
    eager = spec.build()
    assert_same(eager, meta_then_materialised(spec.build))
    embeddings = eager.llm.get_input_embeddings().weight
    assert embeddings.shape[0] == 320 and torch.equal(embeddings[:258], saved.get_input_embeddings().weight)
    assert torch.equal(eager.llm.lm_head.weight[:258], saved.lm_head.weight)
    assert 0.5 * 0.02 < float(embeddings[258:].detach().std()) < 2 * 0.02  # new rows drawn as HF initialises embeddings


def test_a_composed_model_materialised_equals_its_eager_build():
    from prism_core.composition import build
    from prism_core.spec import ModelSpec, structure

    spec = structure({"vision": "siglip-tiny", "projector": {"kind": "gelu-mlp"}, "llm": "llama-tiny", "seed": 4},
                     ModelSpec)
    meta = build(spec, device="meta")
    assert all(t.is_meta for t in tensors(meta).values())  # every first-party component built on meta, no fallback
    assert_same(build(spec), materialize(meta))


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_every_released_recipe_builds_on_meta_offline(model_id):
    from prism_core.composition import build
    from prism_core.spec import load_spec

    vlm = build(load_spec(model_id), device="meta")  # no weights, no tokenizer files, no download
    assert all(t.is_meta for t in tensors(vlm).values())
