"""Original-layout (config.json + checkpoints/latest-checkpoint.pt) loading on tiny synthesised checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from prism_plugin_prismatic.original import PrismaticLoadError, load_prismatic, map_keys
from prism_plugin_projectors.spec import FusedGeluMLPProjectorSpec, GeluMLPProjectorSpec

import prism_core
from prism_core.composition import build
from prism_core.registry import use_registry
from prism_core.spec import ModelSpec, structure
from prism_core.testing.fakes import fake_registry

ARCH = {"gelu-mlp": "no-align+gelu-mlp", "fused-gelu-mlp": "no-align+fused-gelu-mlp"}


@pytest.fixture(autouse=True)
def registry():
    with use_registry(fake_registry(extra=[GeluMLPProjectorSpec, FusedGeluMLPProjectorSpec])) as r:
        yield r


def _reference(projector: str = "gelu-mlp"):
    spec = structure({"vision": {"kind": "fake-vit"}, "llm": {"kind": "fake-llama"},
                      "projector": {"kind": projector}, "seed": 3}, ModelSpec)
    return build(spec).eval()


def _causal_lm(vlm):
    return next(m for m in vlm.llm_backbone.modules() if hasattr(m, "lm_head"))


def write_original(vlm, root: Path, projector: str = "gelu-mlp", with_vision: bool = False,
                   dtype: torch.dtype = torch.float32) -> Path:
    """The original release layout, keys spelled as PrismaticVLM saved them (``llm.`` prefix, ``projector.N``)."""
    (root / "checkpoints").mkdir(parents=True)
    config = {"model": {"model_id": "tiny+test", "vision_backbone_id": "fake-vit-tiny",
                        "llm_backbone_id": "fake-llama-tiny", "arch_specifier": ARCH[projector],
                        "image_resize_strategy": "resize-naive", "llm_max_length": 2048}, "stage": "finetune"}
    (root / "config.json").write_text(json.dumps(config))
    model = {
        "projector": {k: v.to(dtype) for k, v in vlm.projector.state_dict().items()},
        "llm_backbone": {f"llm.{k}": v.to(dtype) for k, v in _causal_lm(vlm).state_dict().items()},
    }
    if with_vision:
        model["vision_backbone"] = {f"featurizer.{k}": v for k, v in vlm.vision_backbone.state_dict().items()}
    torch.save({"model": model}, root / "checkpoints" / "latest-checkpoint.pt")
    return root


def _inputs(vlm):
    torch.manual_seed(0)
    ids = torch.tensor([[vlm.llm_backbone.tokenizer.bos_token_id, 70, 71, 72, 73]])
    pixels = torch.randn(1, 3, vlm.vision_backbone.image_size, vlm.vision_backbone.image_size)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), pixel_values=pixels)


@pytest.mark.parametrize("projector", ["gelu-mlp", "fused-gelu-mlp"])
def test_tiny_original_checkpoint_gives_the_same_logits(tmp_path, projector):
    reference = _reference(projector)
    run_dir = write_original(reference, tmp_path / "run", projector, with_vision=True)
    loaded = load_prismatic(run_dir)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    with torch.no_grad():
        expected, got = reference(**_inputs(reference)).logits, loaded(**_inputs(loaded)).logits
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert loaded.prompt_format.kind == "fake-pure"  # the LLM's own (trained-with) prompt format


def test_prism_load_dispatches_original_directories_and_casts_bf16(tmp_path):
    reference = _reference()
    run_dir = write_original(reference, tmp_path / "run", dtype=torch.bfloat16)
    loaded = prism_core.load(run_dir)  # through the prism.model_loaders entry point
    ref_w = reference.projector.state_dict()["projector.0.weight"]
    torch.testing.assert_close(loaded.projector.state_dict()["projector.0.weight"],
                               ref_w.to(torch.bfloat16).float())


def test_missing_checkpoint_and_unknown_id_are_clear(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PrismaticLoadError, match=r"latest-checkpoint\.pt is missing"):
        load_prismatic(tmp_path)
    with pytest.raises(PrismaticLoadError, match="neither a directory nor a released Prismatic model"):
        load_prismatic("no-such-model+7b")


def test_offline_download_error_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PrismaticLoadError, match=r"HF_HUB_OFFLINE.*huggingface-cli download TRI-ML/prismatic-vlms"):
        load_prismatic("Prism-DINOSigLIP 7B", cache_dir=str(tmp_path))


def test_pickled_objects_are_refused(tmp_path):
    run_dir = write_original(_reference(), tmp_path / "run")
    torch.save({"model": {"projector": {}, "llm_backbone": {}}, "evil": Path("x")},
               run_dir / "checkpoints" / "latest-checkpoint.pt")
    with pytest.raises(PrismaticLoadError, match="weights-only"):
        load_prismatic(run_dir)


def test_key_mapping_reports_unmapped_missing_and_shape_problems():
    target = {"projector.projector.0.weight": (4, 2), "projector.projector.0.bias": (4,)}
    assert map_keys("projector", {"projector.0.weight": (4, 2), "projector.0.bias": (4,)}, target) == {
        "projector.0.weight": "projector.projector.0.weight", "projector.0.bias": "projector.projector.0.bias"}
    with pytest.raises(PrismaticLoadError, match=r"match no prism parameter, e.g. projector.9.weight") as err:
        map_keys("projector", {"projector.9.weight": (4, 2), "projector.0.weight": (4, 3)}, target)
    assert "get no value, e.g. projector.projector.0.bias" in str(err.value)
    assert "shape mismatch" in str(err.value) and "(4, 3) vs prism" in str(err.value)
    fused = {"members.dino.blocks.0.w": (2,), "members.siglip.blocks.0.w": (3,)}
    assert map_keys("vision_backbone", {"dino_featurizer.blocks.0.w": (2,), "siglip_featurizer.blocks.0.w": (3,)},
                    fused) == {"dino_featurizer.blocks.0.w": "members.dino.blocks.0.w",
                               "siglip_featurizer.blocks.0.w": "members.siglip.blocks.0.w"}


# -- meta-device loading: no weight is randomly initialised and then overwritten -----------------------------------
def test_a_full_checkpoint_initialises_nothing_but_computed_buffers(tmp_path, random_inits):
    reference = _reference()
    run_dir = write_original(reference, tmp_path / "run", with_vision=True)
    random_inits.clear()
    loaded = load_prismatic(run_dir)
    assert random_inits and all(not module._parameters for module in random_inits)  # the rotary frequencies
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())


def test_a_checkpoint_without_vision_takes_the_vision_backbones_own_weights(tmp_path, random_inits):
    run_dir = write_original(_reference(), tmp_path / "run", with_vision=False)
    random_inits.clear()
    loaded = load_prismatic(run_dir)
    initialised = {id(m) for m in random_inits}
    vision = {id(m) for m in loaded.vision_backbone.modules() if m._parameters}
    assert vision <= initialised  # the fake backbone's own initialisation, the only weights it has
    others = [m for m in (*loaded.projector.modules(), *loaded.llm_backbone.modules()) if m._parameters]
    assert not any(id(m) in initialised for m in others)
    assert not any(p.is_meta for p in loaded.parameters())
