"""Mistral v0.1 and Phi-2 presets: original sizes on the meta device, spec problems."""

from __future__ import annotations

import pytest
from prism_plugin_hf_llm.spec import HFCausalLMSpec

from prism_core.spec import SpecError, loads_spec


@pytest.mark.parametrize(
    ("preset", "hidden", "rows", "layer", "prompt_format"),
    [
        ("mistral-v0.1-7b-pure", 4096, 32064, "MistralDecoderLayer", "pure"),
        ("mistral-v0.1-7b-instruct", 4096, 32064, "MistralDecoderLayer", "mistral-instruct"),
        # Phi-2's tokenizer has 50295 entries; + <|pad|> = 50296 -> 50304 rows (the config's 51200 shrink).
        ("phi-2-3b", 2560, 50304, "PhiDecoderLayer", "phi-2"),
    ],
)
def test_preset_builds_on_meta_with_original_sizes(preset: str, hidden: int, rows: int, layer: str,
                                                   prompt_format: str) -> None:
    spec = HFCausalLMSpec.from_preset(preset)
    assert spec.default_prompt_format == prompt_format
    llm = spec.build(device="meta")
    assert llm.embed_dim == hidden
    assert llm.llm.get_input_embeddings().weight.shape == (rows, hidden)
    assert llm.llm.get_input_embeddings().weight.is_meta
    assert [c.__name__ for c in llm.decoder_layer_classes] == [layer]


def test_phi_preset_declares_its_bos_special_case() -> None:
    spec = HFCausalLMSpec.from_preset("phi-2-3b")
    assert spec.bos_in_prompt_text and spec.pad_token == "<|pad|>"
    assert HFCausalLMSpec.from_preset("mistral-v0.1-7b-pure").pad_token == "<PAD>"


def test_spec_problems_name_the_fields() -> None:
    text = """
        kind = "hf-causal-lm"
        weights = "pretrained"
        hidden_size = 100
        num_attention_heads = 8
    """
    with pytest.raises(SpecError) as info:
        loads_spec(text, cls=HFCausalLMSpec.__mro__[1], source="llm.toml")
    message = str(info.value)
    assert "model_id: required with weights = 'pretrained'" in message
    assert "hidden_size: must be a multiple of num_attention_heads (8), got 100" in message
