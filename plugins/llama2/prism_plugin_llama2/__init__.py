"""prism-plugin-llama2: the ``llama2`` LLM backbone kind (Llama-2, Llama-2 Chat, Vicuna v1.5, ``llama-tiny``) and
the tiny byte-level tokenizer. Torch-free at import."""

from prism_plugin_llama2.spec import TINY_TOKENIZER_DIR, Llama2Spec, load_tiny_tokenizer

__all__ = ["TINY_TOKENIZER_DIR", "Llama2Spec", "load_tiny_tokenizer"]
