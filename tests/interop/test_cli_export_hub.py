"""`prism export hf` and `prism hub push/pull` end to end on a tiny model saved with prism_core.save (real plugins:
siglip-tiny → gelu-mlp → llama-tiny), and the exported processor against prism's own image transform."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from PIL import Image

import prism_core
from prism_core.cli.main import main
from prism_core.composition import compose

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "prismatic" / "tests"))
from loopback_hub import LoopbackHub


def _tiny(resize: str = "resize-naive"):
    return compose({"kind": "siglip", "preset": "siglip-tiny", "resize": resize}, {"kind": "gelu-mlp"},
                   {"kind": "llama2", "preset": "llama-tiny"}, seed=5).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    vlm = _tiny()
    return vlm, prism_core.save(vlm, tmp_path_factory.mktemp("models") / "tiny")


def _image(width: int = 57, height: int = 41) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_cli_export_hf_gives_prisms_logits(saved, tmp_path, capsys):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    vlm, path = saved
    assert main(["export", "hf", str(path), str(tmp_path / "llava")]) == 0
    assert "LlavaForConditionalGeneration" in capsys.readouterr().out
    llava = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    processor = LlavaProcessor.from_pretrained(tmp_path / "llava", backend="pil")
    image, prompt = _image(), "In: what is this?\nOut:"
    inputs = processor(images=image, text="<image>" + prompt, return_tensors="pt")
    tok = vlm.llm_backbone.tokenizer
    text = tok(prompt, add_special_tokens=False).input_ids
    ids = torch.tensor([[tok.bos_token_id, *text]])
    pixels = vlm.vision_backbone.image_transform(image)[None]
    with torch.no_grad():
        ours = vlm(input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), pixel_values=pixels).logits
        theirs = llava(**inputs).logits
    # the processor expands <image> to one token per patch, after BOS: the same sequence prism builds
    assert inputs["input_ids"].shape[1] == ids.shape[1] + vlm.vision_backbone.num_patches - 1 + 1
    torch.testing.assert_close(theirs[..., : ours.shape[-1]], ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("resize", ["resize-naive", "resize-crop"])
@pytest.mark.parametrize("size", [(57, 41), (30, 90), (32, 32)])
def test_exported_processor_matches_prisms_image_transform(resize, size, tmp_path):
    from prism_plugin_prismatic.export_hf import export_llava
    from transformers import LlavaProcessor

    vlm = _tiny(resize) if resize != "resize-naive" else _tiny()
    out = export_llava(vlm, tmp_path / "out")
    image = _image(*size)
    ours = vlm.vision_backbone.image_transform(image)
    pil = LlavaProcessor.from_pretrained(out, backend="pil").image_processor
    theirs = pil(image, return_tensors="pt")["pixel_values"][0]
    assert theirs.shape == ours.shape
    # both resize with PIL (bicubic, uint8) and normalise in float32: equal up to float rounding
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)
    # transformers 5's default backend (torchvision) resizes a little differently (its antialiasing differs from
    # PIL's when downscaling): on average well under one uint8 level, a few levels at worst
    default = LlavaProcessor.from_pretrained(out).image_processor
    level = 1 / 255 / min(vlm.vision_backbone.image_transform.std)
    assert (default(image, return_tensors="pt")["pixel_values"][0] - ours).abs().mean() <= level


def test_letterbox_models_are_refused_unless_allowed(tmp_path, capsys):
    vlm = _tiny("letterbox")
    path = prism_core.save(vlm, tmp_path / "lb")
    assert main(["export", "hf", str(path), str(tmp_path / "out")]) == 2
    assert "letterbox" in capsys.readouterr().err
    assert main(["export", "hf", str(path), str(tmp_path / "out"), "--allow-letterbox"]) == 0


def test_cli_hub_push_then_pull_then_load(saved, tmp_path, monkeypatch, capsys):
    vlm, path = saved
    with LoopbackHub() as hub:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        assert main(["hub", "push", str(path), "me/tiny", "--hf-token", "hf_x", "--revision", "v1",
                     "--training-spec", "prism-siglip+7b"]) == 0
        assert capsys.readouterr().out.strip().startswith(f"{hub.url}/me/tiny/commit/")
        assert "llava-lvis4v-lrv" in hub.files("me/tiny", "v1")["README.md"].decode()
        assert main(["hub", "pull", "me/tiny", "--revision", "v1", "--cache-dir", str(tmp_path / "cache")]) == 0
        local = Path(capsys.readouterr().out.strip().splitlines()[-1])
        assert main(["hub", "pull", "me/tiny", "--revision", "nope", "--cache-dir", str(tmp_path / "c2")]) == 2
        assert "no such revision" in capsys.readouterr().err
    loaded = prism_core.load(local)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vlm.state_dict().values(), strict=True))
