"""Save → load round trips, atomic writes, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prism_core import generation, load, save
from prism_core.io import ModelFormatError, load_weights

from .helpers import image

PROMPTS = ["In: What colour is it?\nOut:", "In: hi\nOut:"]


def test_save_then_load_rebuilds_the_same_model(vlm, tmp_path: Path) -> None:
    with torch.no_grad():  # make the weights differ from a fresh build with the same seed
        vlm.projector.projector[0].weight.add_(0.5)
    target = save(vlm, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary directories left behind
    loaded = load(target)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    reference = vlm.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    pixels = [vlm.image_transform(image(0)), None]
    kwargs = {"max_new_tokens": 5, "do_sample": False}
    assert torch.equal(generation.generate_ids(loaded, pixels, PROMPTS, **kwargs),
                       generation.generate_ids(vlm, pixels, PROMPTS, **kwargs))
    assert loaded.spec == vlm.spec and loaded.spec.prompt_format is not None


def test_manifest_records_components_and_dtype(vlm, tmp_path: Path) -> None:
    vlm.to(dtype=torch.bfloat16)
    save(vlm, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "prism.json").read_text())
    assert manifest["dtype"] == "bfloat16"
    assert manifest["components"]["llm"] == {"kind": "fake-llama", "distribution": "prism-core-fakes", "version": "0"}
    assert load(tmp_path / "m").llm_backbone.llm.lm_head.weight.dtype == torch.bfloat16


def test_overwrite_replaces_and_refusal_keeps(vlm, tmp_path: Path) -> None:
    save(vlm, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(vlm, tmp_path / "m", overwrite=False)
    save(vlm, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failed_write_leaves_nothing_under_the_final_name(vlm, tmp_path: Path, monkeypatch) -> None:
    import prism_core.io as io

    def explode(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(io, "dumps_spec", explode)
    with pytest.raises(OSError, match="disk full"):
        save(vlm, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_mismatched_weights_name_the_file(vlm, fused_vlm, tmp_path: Path) -> None:
    save(fused_vlm, tmp_path / "fused")
    with pytest.raises(ModelFormatError, match=r"model\.safetensors: weights do not"):
        load_weights(vlm, tmp_path / "fused")


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="is not a saved prism model"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model at"):
        load(str(tmp_path / "nope"))


def test_init_from_warm_starts_a_new_build(vlm, tmp_path: Path) -> None:
    import attrs

    from prism_core import build

    with torch.no_grad():
        vlm.projector.projector[2].bias.fill_(3.0)
    save(vlm, tmp_path / "m")
    warm = build(attrs.evolve(vlm.spec, init_from=str(tmp_path / "m"), seed=9))
    assert torch.equal(warm.projector.projector[2].bias, vlm.projector.projector[2].bias)
