"""Prompt formats: the original Prismatic builders' exact strings, a corrected Llama-2 chat format, and one driven by
a tokenizer's own Jinja ``chat_template``.

Every format renders one ``Segment`` per turn; assistant segments are supervised and carry the end-of-turn text.
Messages lose their ``<image>`` markers and surrounding whitespace (the image is spliced in after BOS instead);
an empty assistant message becomes ``" "``, as in the original.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prism_core.prompting import PromptFormatError
from prism_core.types import ASSISTANT, HUMAN, Segment, Turn

VICUNA_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA2_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)

_PLACEHOLDER = re.compile(r"\{(system|message)\}")


def clean_message(message: str) -> str:
    return message.replace("<image>", "").strip()


def check_roles(turns: Sequence[Turn]) -> None:
    """Roles must alternate human, gpt, human, ... (LLaVA spelling); the error names the first bad turn."""
    for index, turn in enumerate(turns):
        expected = HUMAN if index % 2 == 0 else ASSISTANT
        if turn.role not in (HUMAN, ASSISTANT):
            raise PromptFormatError(f"turn {index}: unknown role {turn.role!r} (expected {HUMAN!r} or {ASSISTANT!r})")
        if turn.role != expected:
            raise PromptFormatError(f"turn {index}: expected role {expected!r}, got {turn.role!r} (roles must "
                                    f"alternate {HUMAN!r}, {ASSISTANT!r}, ... starting with {HUMAN!r})")


def fill(template: str, **values: str) -> str:
    """``{system}``/``{message}`` substitution in one pass, so braces inside the values are left alone."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class TemplateFormat:
    """A format given by string templates with ``{message}`` (and, in the first turn, ``{system}``) slots."""

    kind: str
    human: str
    gpt: str
    first_human: str | None = None  # the first human turn (system prompt, BOS text); default ``human``
    later_human: str | None = None  # human turns after the first assistant turn; default ``human``
    system_prompt: str | None = None
    bos: str = "<s>"
    strip_bos: bool = True  # prompt() drops a leading BOS string because the tokenizer adds BOS
    potential_first_human: str | None = None  # what the original's get_potential_prompt uses on the first turn

    def _turn_text(self, index: int, turn: Turn) -> str:
        message = clean_message(turn.message)
        if turn.role == ASSISTANT:
            return fill(self.gpt, message=message or " ")
        if index == 0:
            template = self.first_human or self.human
        else:
            template = self.later_human or self.human
        return fill(template, message=message, system=(self.system_prompt or "").strip())

    def render(self, turns: Sequence[Turn]) -> list[Segment]:
        check_roles(turns)
        return [Segment(self._turn_text(i, turn), supervised=turn.role == ASSISTANT) for i, turn in enumerate(turns)]

    def prompt(self, turns: Sequence[Turn]) -> str:
        return self._finish("".join(segment.text for segment in self.render(turns)))

    def potential_prompt(self, turns: Sequence[Turn], message: str) -> str:
        """The original builder's ``get_potential_prompt(message)`` after ``turns``: the message goes in as given
        (no ``<image>`` removal, no strip), as the original's does."""
        check_roles([*turns, Turn(HUMAN, message)])
        if turns:
            template = self.later_human or self.human
        else:
            template = self.potential_first_human or self.first_human or self.human
        history = "".join(segment.text for segment in self.render(turns))
        return self._finish(history + fill(template, message=message, system=(self.system_prompt or "").strip()))

    def _finish(self, text: str) -> str:
        if self.strip_bos:
            text = text.removeprefix(self.bos)
        return text.rstrip()


def pure() -> TemplateFormat:
    return TemplateFormat(kind="pure", human="In: {message}\nOut: ", gpt="{message}</s>")


def vicuna_v15(system_prompt: str) -> TemplateFormat:
    return TemplateFormat(
        kind="vicuna-v1.5",
        first_human="{system} USER: {message} ASSISTANT: ",
        human="USER: {message} ASSISTANT: ",
        gpt="{message}</s>",
        system_prompt=system_prompt,
    )


def llama2_chat(system_prompt: str) -> TemplateFormat:
    """The original's Llama-2 chat format, including its ``<<SYS>`` typo (released checkpoints were trained on
    it)."""
    return TemplateFormat(
        kind="llama2-chat",
        first_human="[INST] <<SYS>\n{system}\n<</SYS>>\n\n{message} [/INST] ",
        human="[INST] {message} [/INST] ",
        gpt="{message}</s>",
        system_prompt=system_prompt,
    )


def llama2_chat_fixed(system_prompt: str | None) -> TemplateFormat:
    """Meta's Llama-2 chat format: ``<<SYS>>`` tag, the system block only when there is a system prompt, answers
    wrapped as `` {answer} </s>`` and every later exchange opening with its own ``<s>``."""
    has_system = bool(system_prompt and system_prompt.strip())
    return TemplateFormat(
        kind="llama2-chat-fixed",
        first_human="[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{message} [/INST] " if has_system else None,
        human="[INST] {message} [/INST] ",
        later_human="<s>[INST] {message} [/INST] ",
        gpt="{message} </s>",
        system_prompt=system_prompt if has_system else None,
    )


def mistral_instruct() -> TemplateFormat:
    return TemplateFormat(kind="mistral-instruct", human="[INST] {message} [/INST] ", gpt="{message}</s>")


def phi2() -> TemplateFormat:
    """Phi-2: its tokenizer adds no BOS, so the first turn writes ``<|endoftext|>`` and the prompt keeps it."""
    return TemplateFormat(
        kind="phi-2",
        first_human="<|endoftext|>Input: {message}\nOutput: ",
        human="Input: {message}\nOutput: ",
        gpt="{message}\n<|endoftext|>",
        bos="<|endoftext|>",
        strip_bos=False,
        potential_first_human="Input: {message}\nOutput: ",  # the original's get_potential_prompt adds no BOS text
    )


class ChatTemplateFormat:
    """Renders with a tokenizer's Jinja ``chat_template`` (``apply_chat_template``), turn by turn.

    Segment ``i`` is what rendering turns ``0..i`` adds to rendering turns ``0..i-1``; human turns are rendered with
    the generation prompt, so the assistant header is part of the (unsupervised) human segment and the supervised
    segment is the answer plus the template's end-of-turn text. A template whose earlier output is not a prefix of
    its later output cannot be split this way and is rejected with the turn index.
    """

    kind = "chat-template"

    def __init__(self, tokenizer: Any, *, system_prompt: str | None = None, template: str | None = None) -> None:
        if tokenizer is None:
            raise PromptFormatError("prompt format 'chat-template' needs the tokenizer: build(tokenizer=llm.tokenizer)")
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.template = template or getattr(tokenizer, "chat_template", None)
        if not self.template:
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise PromptFormatError(f"tokenizer {name!r} has no chat_template: set the spec's 'template' field or "
                                    "use a prompt format of its own kind")
        bos = tokenizer.bos_token
        # Templates often write BOS themselves; drop it where the tokenizer adds one too (no double BOS).
        self.bos: str | None = bos if bos and self._tokenizer_adds_bos() else None

    def _tokenizer_adds_bos(self) -> bool:
        bos_id = self.tokenizer.bos_token_id
        with_special = self.tokenizer("a").input_ids
        return bos_id is not None and with_special[:1] == [bos_id]

    def _text(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=generation_prompt
        )

    def render(self, turns: Sequence[Turn]) -> list[Segment]:
        check_roles(turns)
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        segments: list[Segment] = []
        previous = ""
        for index, turn in enumerate(turns):
            message = clean_message(turn.message)
            is_answer = turn.role == ASSISTANT
            messages.append({"role": "assistant" if is_answer else "user", "content": message or " " * is_answer})
            text = self._text(messages, generation_prompt=not is_answer)
            if not text.startswith(previous):
                raise PromptFormatError(f"turn {index}: the chat template rewrites earlier turns when this one is "
                                        "added, so turns cannot be supervised separately; use another prompt format")
            segments.append(Segment(text[len(previous):], supervised=is_answer))
            previous = text
        if segments and self.bos and segments[0].text.startswith(self.bos):
            segments[0] = Segment(segments[0].text[len(self.bos):], supervised=False)
        return segments

    def prompt(self, turns: Sequence[Turn]) -> str:
        # Trailing spaces go (the answer's first token carries its leading space, ``▁x`` / ``Ġx``); a newline
        # that ends the template's generation prompt stays, as the template wrote it.
        return "".join(segment.text for segment in self.render(turns)).rstrip(" \t")
