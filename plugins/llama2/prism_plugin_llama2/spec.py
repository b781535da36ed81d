"""``llama2``: Llama-2, Llama-2 Chat and Vicuna v1.5 backbones, plus ``llama-tiny`` for tests and the quickstart.

A thin specialisation of ``hf-causal-lm``: the same loading, tokenizer and generation code, with Llama defaults
and presets that carry each model's config so full-size models build on the meta device without a download.
Torch-free at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
from prism_plugin_hf_llm.spec import HFCausalLMSpec

from prism_core.spec import spec_field

#: ``tokenizer_id`` naming the byte-level tokenizer shipped in this package (see ``build_tiny_tokenizer``).
TINY_TOKENIZER = "prism-tiny"
TINY_TOKENIZER_DIR = Path(__file__).parent / "tiny_tokenizer"

_LLAMA2 = {
    "model_type": "llama", "vocab_size": 32000, "tokenizer_size": 32000, "max_position_embeddings": 4096,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}
_7B = {**_LLAMA2, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
       "intermediate_size": 11008}
_13B = {**_LLAMA2, "hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
        "num_key_value_heads": 40, "intermediate_size": 13824}


def _meta(repo: str, prompt_format: str, size: Mapping[str, Any]) -> dict[str, Any]:
    return {"model_id": repo, "gated": repo.startswith("meta-llama/"), "prompt_format": prompt_format, **size}


@attrs.frozen(kw_only=True)
class Llama2Spec(HFCausalLMSpec):
    """A Llama-architecture causal LM (``LlamaForCausalLM``); PAD ``<PAD>``, embeddings padded to 64 rows."""

    kind: ClassVar[str] = "llama2"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "llama2-7b-pure": _meta("meta-llama/Llama-2-7b-hf", "pure", _7B),
        "llama2-13b-pure": _meta("meta-llama/Llama-2-13b-hf", "pure", _13B),
        "llama2-7b-chat": _meta("meta-llama/Llama-2-7b-chat-hf", "llama2-chat", _7B),
        "llama2-13b-chat": _meta("meta-llama/Llama-2-13b-chat-hf", "llama2-chat", _13B),
        "vicuna-v15-7b": _meta("lmsys/vicuna-7b-v1.5", "vicuna-v1.5", _7B),
        "vicuna-v15-13b": _meta("lmsys/vicuna-13b-v1.5", "vicuna-v1.5", _13B),
        # Random init with the shipped tokenizer: the quickstart's LLM (hidden 128, 2 layers, init std 0.08).
        "llama-tiny": {
            "weights": "random", "tokenizer_id": TINY_TOKENIZER, "prompt_format": "pure", "model_type": "llama",
            "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "intermediate_size": 256, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
            "initializer_range": 0.08, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
        },
    }

    model_type: str | None = spec_field("llama", help="Hugging Face model_type; llama for every preset here")

    def tokenizer_source(self) -> str:
        if self.tokenizer_id == TINY_TOKENIZER:
            return str(TINY_TOKENIZER_DIR)
        return super().tokenizer_source()


def load_tiny_tokenizer() -> Any:
    """The shipped tiny tokenizer, prepared as the ``llama-tiny`` backbone uses it (``<PAD>`` added, right padding).
    Imports transformers."""
    preset = Llama2Spec.presets["llama-tiny"]
    return Llama2Spec(preset="llama-tiny", **preset).build_tokenizer()
