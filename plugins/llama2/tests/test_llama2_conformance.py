"""The shared LLM-backbone conformance suite on llama-tiny."""

from __future__ import annotations

from prism_plugin_llama2 import Llama2Spec

from prism_core.testing.conformance import LLMBackboneConformance


class TestLlamaTinyConformance(LLMBackboneConformance):
    spec = Llama2Spec.from_preset("llama-tiny")
