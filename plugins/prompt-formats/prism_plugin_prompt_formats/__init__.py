"""prism-plugin-prompt-formats: pure, vicuna-v1.5, llama2-chat, llama2-chat-fixed, mistral-instruct, phi-2 and
chat-template. Only the torch-free specs are imported here; the formats live in ``.formats``."""

from prism_plugin_prompt_formats.spec import (
    ChatTemplatePromptSpec,
    Llama2ChatFixedPromptSpec,
    Llama2ChatPromptSpec,
    MistralInstructPromptSpec,
    Phi2PromptSpec,
    PurePromptSpec,
    VicunaV15PromptSpec,
)

__all__ = [
    "ChatTemplatePromptSpec",
    "Llama2ChatFixedPromptSpec",
    "Llama2ChatPromptSpec",
    "MistralInstructPromptSpec",
    "Phi2PromptSpec",
    "PurePromptSpec",
    "VicunaV15PromptSpec",
]
