"""prism-plugin-hf-llm: the ``hf-causal-lm`` LLM backbone kind (any Hugging Face causal LM).

Only the torch-free spec is imported here; ``prism_plugin_hf_llm.backbone`` and ``.loading`` hold the implementation.
"""

from prism_plugin_hf_llm.spec import HFCausalLMSpec

__all__ = ["HFCausalLMSpec"]
