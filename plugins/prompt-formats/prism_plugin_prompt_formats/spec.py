"""Prompt-format specs, one kind each. Torch-free (the formats themselves are plain Python)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from prism_core.spec import PromptFormatSpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_prompt_formats.formats import ChatTemplateFormat, TemplateFormat

# Kept in sync with formats.py by a test; duplicated so this module does not import the implementation.
VICUNA_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA2_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)


@attrs.frozen(kw_only=True)
class PurePromptSpec(PromptFormatSpec):
    """``In: {question}\\nOut: {answer}</s>`` (the original's PurePromptBuilder, used by base LLMs)."""

    kind: ClassVar[str] = "pure"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"pure": {}}

    def build(self, tokenizer: Any = None) -> TemplateFormat:
        from prism_plugin_prompt_formats.formats import pure

        return pure()


@attrs.frozen(kw_only=True)
class VicunaV15PromptSpec(PromptFormatSpec):
    """``{system} USER: {question} ASSISTANT: {answer}</s>`` (VicunaV15ChatPromptBuilder)."""

    kind: ClassVar[str] = "vicuna-v1.5"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"vicuna-v15": {}}  # no "." in preset names

    system_prompt: str = spec_field(VICUNA_SYSTEM_PROMPT, help="text before the first USER turn")

    def build(self, tokenizer: Any = None) -> TemplateFormat:
        from prism_plugin_prompt_formats.formats import vicuna_v15

        return vicuna_v15(self.system_prompt)


@attrs.frozen(kw_only=True)
class Llama2ChatPromptSpec(PromptFormatSpec):
    """The original LLaMa2ChatPromptBuilder, ``<<SYS>`` typo included, for its released checkpoints."""

    kind: ClassVar[str] = "llama2-chat"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"llama2-chat": {}}

    system_prompt: str = spec_field(LLAMA2_SYSTEM_PROMPT, help="text of the system block in the first turn")

    def build(self, tokenizer: Any = None) -> TemplateFormat:
        from prism_plugin_prompt_formats.formats import llama2_chat

        return llama2_chat(self.system_prompt)


@attrs.frozen(kw_only=True)
class Llama2ChatFixedPromptSpec(PromptFormatSpec):
    """Meta's Llama-2 chat format (``<<SYS>>``; later turns open with ``<s>``), for new training runs."""

    kind: ClassVar[str] = "llama2-chat-fixed"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"llama2-chat-fixed": {}}

    system_prompt: str | None = spec_field(LLAMA2_SYSTEM_PROMPT, help="system block text; '' leaves the block out")

    def build(self, tokenizer: Any = None) -> TemplateFormat:
        from prism_plugin_prompt_formats.formats import llama2_chat_fixed

        return llama2_chat_fixed(self.system_prompt)


@attrs.frozen(kw_only=True)
class MistralInstructPromptSpec(PromptFormatSpec):
    """``[INST] {question} [/INST] {answer}</s>`` (MistralInstructPromptBuilder; no system prompt)."""

    kind: ClassVar[str] = "mistral-instruct"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"mistral-instruct": {}}

    def build(self, tokenizer: Any = None) -> TemplateFormat:
        from prism_plugin_prompt_formats.formats import mistral_instruct

        return mistral_instruct()


@attrs.frozen(kw_only=True)
class Phi2PromptSpec(PromptFormatSpec):
    """``<|endoftext|>Input: {question}\\nOutput: {answer}\\n<|endoftext|>`` (PhiPromptBuilder)."""

    kind: ClassVar[str] = "phi-2"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"phi-2": {}}

    def build(self, tokenizer: Any = None) -> TemplateFormat:
        from prism_plugin_prompt_formats.formats import phi2

        return phi2()


@attrs.frozen(kw_only=True)
class ChatTemplatePromptSpec(PromptFormatSpec):
    """The tokenizer's own Jinja ``chat_template``: any modern instruct model without new code."""

    kind: ClassVar[str] = "chat-template"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"chat-template": {}}

    system_prompt: str | None = spec_field(None, help="sent as a 'system' message first (None: none)")
    template: str | None = spec_field(None, help="Jinja template used instead of the tokenizer's chat_template")

    def build(self, tokenizer: Any = None) -> ChatTemplateFormat:
        from prism_plugin_prompt_formats.formats import ChatTemplateFormat

        return ChatTemplateFormat(tokenizer, system_prompt=self.system_prompt, template=self.template)
