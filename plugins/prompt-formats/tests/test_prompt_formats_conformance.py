"""The shared prompt-format conformance suite, once per kind."""

from __future__ import annotations

from pathlib import Path
from tempfile import mkdtemp

from prism_plugin_prompt_formats.spec import (
    ChatTemplatePromptSpec,
    Llama2ChatFixedPromptSpec,
    Llama2ChatPromptSpec,
    MistralInstructPromptSpec,
    Phi2PromptSpec,
    PurePromptSpec,
    VicunaV15PromptSpec,
)
from test_prompt_formats_chat_template import chatml_tokenizer

from prism_core.testing.conformance import PromptFormatConformance


class TestPureConformance(PromptFormatConformance):
    spec = PurePromptSpec.from_preset("pure")


class TestVicunaV15Conformance(PromptFormatConformance):
    spec = VicunaV15PromptSpec.from_preset("vicuna-v15")


class TestLlama2ChatConformance(PromptFormatConformance):
    spec = Llama2ChatPromptSpec.from_preset("llama2-chat")


class TestLlama2ChatFixedConformance(PromptFormatConformance):
    spec = Llama2ChatFixedPromptSpec.from_preset("llama2-chat-fixed")


class TestMistralInstructConformance(PromptFormatConformance):
    spec = MistralInstructPromptSpec.from_preset("mistral-instruct")


class TestPhi2Conformance(PromptFormatConformance):
    spec = Phi2PromptSpec.from_preset("phi-2")
    real_tokenizers = ("byte-bpe",)  # a GPT-2-style BPE that adds no BOS, as Phi-2's CodeGen tokenizer


class TestChatTemplateConformance(PromptFormatConformance):
    spec = ChatTemplatePromptSpec.from_preset("chat-template", system_prompt="Be brief.")
    tokenizer = chatml_tokenizer(Path(mkdtemp(prefix="prism-chatml-")))
    real_tokenizers = ("sentencepiece", "sentencepiece-nonlegacy", "sentencepiece-slow", "byte-bpe")
    uses_chat_template = True  # Llama-2's template on the SentencePiece tokenizers, ChatML on the BPE
