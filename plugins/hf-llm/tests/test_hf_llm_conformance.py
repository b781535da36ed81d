"""The shared LLM-backbone conformance suite on a tiny random Mistral with a byte-level tokenizer."""

from __future__ import annotations

from pathlib import Path
from tempfile import mkdtemp

from prism_plugin_hf_llm.spec import HFCausalLMSpec

from prism_core.testing.conformance import LLMBackboneConformance
from prism_core.testing.toys import write_byte_tokenizer


class TestTinyMistralConformance(LLMBackboneConformance):
    spec = HFCausalLMSpec(
        weights="random", tokenizer_id=str(write_byte_tokenizer(Path(mkdtemp(prefix="prism-hf-llm-")))),
        model_type="mistral", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, prompt_format="mistral-instruct",
    )
