"""The featurizer (second-to-last block, no last block, prefix tokens dropped), weights, specs and freezing."""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import pytest
import timm
import torch
from prism_plugin_timm_vision.spec import TimmViTSpec
from prism_plugin_timm_vision.weights import WeightsMismatchError, WeightsUnavailableError
from safetensors.torch import save_file

from prism_core.spec import SpecError, VisionBackboneSpec, structure

TINY = {"image_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2, "weights": "random"}


@attrs.frozen(kw_only=True)
class Holder:
    """Stands in for the run spec's model table, so problems carry a dotted path."""

    vision: VisionBackboneSpec


def full_timm_model(spec: TimmViTSpec, seed: int | None = None) -> torch.nn.Module:
    """The untruncated timm model the spec describes, with timm's own random initialisation under ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed if seed is None else seed)
        return timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs()).eval()


# SigLIP (no prefix token), DINOv2 with registers (5 prefix tokens), OpenAI CLIP (1, quick_gelu), plain ViT (1).
ARCHITECTURES = [("vit_base_patch16_siglip_224", None), ("vit_large_patch14_reg4_dinov2", None),
                 ("vit_base_patch16_clip_224", "quick_gelu"), ("vit_tiny_patch16_224", None)]


@pytest.mark.parametrize(("timm_name", "act_layer"), ARCHITECTURES)
def test_features_equal_timm_intermediate_layers_without_running_the_last_block(timm_name, act_layer) -> None:
    spec = TimmViTSpec(timm_name=timm_name, act_layer=act_layer, seed=3, **TINY)
    backbone = spec.build()
    full = full_timm_model(spec)
    # The backbone's weights; the full model keeps its own last block, final norm and head.
    assert not full.load_state_dict(backbone.featurizer.state_dict(), strict=False).unexpected_keys
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = full.get_intermediate_layers(pixels, n=[len(full.blocks) - 2])[0]  # norm off, prefix dropped
        features = backbone(pixels)
    assert features.shape == (2, 16, 64)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    # The last block, final norm and classifier are gone, not merely skipped.
    assert len(backbone.featurizer.blocks) == 2
    assert isinstance(backbone.featurizer.norm, torch.nn.Identity)
    assert sum(p.numel() for p in backbone.parameters()) < sum(p.numel() for p in full.parameters())


def test_random_init_is_deterministic_in_the_seed_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = TimmViTSpec.from_preset("vit-tiny", seed=1).build().state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    again = TimmViTSpec.from_preset("vit-tiny", seed=1).build().state_dict()
    other = TimmViTSpec.from_preset("vit-tiny", seed=2).build().state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_weights_from_a_safetensors_file(tmp_path: Path) -> None:
    spec = TimmViTSpec.from_preset("vit-tiny")
    source = full_timm_model(spec, seed=7)
    path = tmp_path / "vit.safetensors"
    save_file(source.state_dict(), str(path))
    backbone = attrs.evolve(spec, weights=str(path)).build()
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(pixels), source.get_intermediate_layers(pixels, n=[1])[0])


def test_a_weights_file_that_does_not_fit_names_the_file_and_keys(tmp_path: Path) -> None:
    wider = TimmViTSpec.from_preset("vit-tiny", embed_dim=96)
    path = tmp_path / "wider.safetensors"
    save_file(full_timm_model(wider).state_dict(), str(path))
    with pytest.raises(WeightsMismatchError, match=r"wider\.safetensors does not fit.*wrong shape: "):
        TimmViTSpec.from_preset("vit-tiny", weights=str(path)).build()
    with pytest.raises(WeightsUnavailableError, match=r"absent\.safetensors does not exist"):
        TimmViTSpec.from_preset("vit-tiny", weights=str(tmp_path / "absent.safetensors")).build()


def test_pretrained_weights_come_from_the_local_hub_cache(tmp_path: Path, monkeypatch) -> None:
    # Lay out the cache as `hf download` would; timm's 160 px test ViT checkpoint with its 1000-class head is
    # adapted to a 32 px featurizer (position embeddings resampled, head dropped) like real pretrained weights.
    name = "test_vit.r160_in1k"
    snapshot = tmp_path / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        source = timm.create_model(name, pretrained=False)
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone = TimmViTSpec(timm_name=name, image_size=32, patch_size=16, weights="pretrained").build()
    assert torch.equal(backbone.featurizer.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert backbone.featurizer.pos_embed.shape == (1, 1 + 4, source.embed_dim)


def test_offline_with_weights_missing_fails_fast_saying_what_to_fetch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as error:
        TimmViTSpec.from_preset("in1k-vit-l").build()
    assert time.perf_counter() - start < 1.0
    assert "hf download timm/vit_large_patch16_224.augreg_in21k_ft_in1k" in str(error.value)
    assert "huggingface-cli download timm/vit_large_patch16_224.augreg_in21k_ft_in1k" in str(error.value)


def test_set_trainable_false_keeps_eval_mode_under_train() -> None:
    backbone = TimmViTSpec.from_preset("vit-tiny").build()
    backbone.set_trainable(False)
    backbone.train()
    assert not backbone.training and not backbone.featurizer.training
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.set_trainable(True)
    assert backbone.training and all(p.requires_grad for p in backbone.parameters())


def test_unknown_and_non_vit_timm_models_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match=r"unknown timm model 'vit_tiny_patch16_2244'; did you mean"):
        TimmViTSpec.from_preset("vit-tiny", timm_name="vit_tiny_patch16_2244").build()
    with pytest.raises(ValueError, match="resnet18"):
        TimmViTSpec(timm_name="resnet18", weights="random").build()


def spec_problems(table: dict) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as error:
        structure({"vision": {"kind": "timm-vit", **table}}, Holder)
    return error.value.problems


def test_image_size_not_a_multiple_of_the_patch_is_a_spec_error_with_its_path(prism_registry) -> None:
    prism_registry.register(TimmViTSpec)
    [(path, message)] = spec_problems({"preset": "vit-tiny", "image_size": 30})
    assert path == "vision.image_size" and "not a multiple of patch_size 8: use 24 or 32" in message
    assert structure({"vision": {"kind": "timm-vit", "preset": "vit-tiny", "image_size": 30,
                                 "partial_patches": True}}, Holder).vision.num_patches == 9


def test_weights_problems(prism_registry) -> None:
    prism_registry.register(TimmViTSpec)
    [(path, message)] = spec_problems({"preset": "vit-tiny", "weights": "model.bin"})
    assert path == "vision.weights" and ".safetensors" in message
    [(path, message)] = spec_problems({"preset": "vit-tiny", "weights": "pretrained"})
    assert path == "vision.weights" and "reshaped by embed_dim, depth, num_heads" in message
    [(path, message)] = spec_problems({"preset": "vit-tiny", "depth": 1})
    assert (path, message) == ("vision.depth", "must be >= 2, got 1")  # features come from block depth - 1
    from prism_core.spec import field_help

    assert "second-to-last" in field_help(attrs.fields_dict(TimmViTSpec)["depth"])


def test_in1k_resizes_to_the_image_size_not_over_crop_pct() -> None:
    assert TimmViTSpec.from_preset("in1k-vit-l").crop_pct == 1.0
    # Left to None, the original's rule applies to any IN-1K or SigLIP timm name.
    spec = TimmViTSpec(timm_name="vit_tiny_patch16_224.augreg_in21k_ft_in1k", image_size=32, patch_size=8,
                       weights="random", resize="resize-crop")
    assert spec.build().image_transform.crop_pct == 1.0


def test_presets_build_on_the_meta_device_with_the_original_shapes() -> None:
    with torch.device("meta"):
        backbone = TimmViTSpec.from_preset("in1k-vit-l").build()
    assert (backbone.num_patches, backbone.embed_dim, backbone.image_size) == (196, 1024, 224)
    assert next(backbone.parameters()).is_meta
