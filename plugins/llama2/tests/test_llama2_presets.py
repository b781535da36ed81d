"""Full-size presets: meta-device builds with the original sizes; offline loads fail fast and say what to do."""

from __future__ import annotations

import time

import pytest
from prism_plugin_hf_llm.loading import LLMLoadError
from prism_plugin_llama2 import Llama2Spec

ORIGINAL = {
    "llama2-7b-pure": (4096, "pure"),
    "llama2-13b-pure": (5120, "pure"),
    "llama2-7b-chat": (4096, "llama2-chat"),
    "llama2-13b-chat": (5120, "llama2-chat"),
    "vicuna-v15-7b": (4096, "vicuna-v1.5"),
    "vicuna-v15-13b": (5120, "vicuna-v1.5"),
}


def test_every_original_id_is_a_preset() -> None:
    assert set(ORIGINAL) | {"llama-tiny"} == set(Llama2Spec.presets)


@pytest.mark.parametrize("preset", sorted(ORIGINAL))
def test_full_size_preset_builds_on_meta_without_download(preset: str) -> None:
    hidden, prompt_format = ORIGINAL[preset]
    spec = Llama2Spec.from_preset(preset)
    assert spec.default_prompt_format == prompt_format
    llm = spec.build(device="meta")
    assert llm.embed_dim == hidden
    assert llm.llm.get_input_embeddings().weight.shape == (32064, hidden)  # 32000 + <PAD>, padded to 64
    assert llm.llm.lm_head.weight.shape == (32064, hidden)
    assert llm.llm.get_input_embeddings().weight.is_meta
    assert [c.__name__ for c in llm.decoder_layer_classes] == ["LlamaDecoderLayer"]


@pytest.mark.parametrize("preset", ["llama2-7b-pure", "vicuna-v15-7b"])
def test_missing_weights_offline_fail_fast_with_instructions(preset: str, tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    spec = Llama2Spec.from_preset(preset)
    start = time.perf_counter()
    with pytest.raises(LLMLoadError) as info:
        spec.build()
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert spec.model_id in message and f"hf download {spec.model_id}" in message and "offline" in message
    if spec.gated:
        assert "token" in message and "licence" in message
    else:
        assert "licence" not in message


def test_llama2_presets_are_gated_vicuna_is_not() -> None:
    assert Llama2Spec.from_preset("llama2-7b-chat").gated
    assert not Llama2Spec.from_preset("vicuna-v15-13b").gated
