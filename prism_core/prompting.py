"""Prompt building on top of any ``PromptFormat``: the original Prismatic ``PromptBuilder`` API, and turning a
conversation into ``(input_ids, labels)`` turn by turn so labels are never guessed by re-tokenizing the prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prism_core.types import IGNORE_INDEX, Turn

if TYPE_CHECKING:
    from prism_core.protocols import PromptFormat


class ConversationError(ValueError):
    """A conversation that cannot be trained on; the message names the turn or the problem."""


class PromptFormatError(ConversationError):
    """A conversation a prompt format cannot render (roles out of order, unknown role); names the turn index."""


def tokenize_conversation(
    tokenizer: Any, prompt_format: PromptFormat, turns: Sequence[Turn]
) -> tuple[list[int], list[int]]:
    """Render ``turns`` segment by segment and tokenize each on its own.

    The first segment is tokenized with the tokenizer's special tokens (so it starts with BOS, or, for formats
    that write BOS into the text such as Phi-2, with the BOS the text carries); later segments without. Labels
    copy the ids of supervised segments and are ``IGNORE_INDEX`` elsewhere, always on the leading BOS.
    """
    if not turns:
        raise ConversationError("empty conversation")
    input_ids: list[int] = []
    labels: list[int] = []
    for i, segment in enumerate(prompt_format.render(turns)):
        ids = tokenizer(segment.text, add_special_tokens=(i == 0)).input_ids
        input_ids += ids
        labels += ids if segment.supervised else [IGNORE_INDEX] * len(ids)
    bos = tokenizer.bos_token_id
    if bos is None or not input_ids or input_ids[0] != bos:
        raise ConversationError(
            f"tokenized conversation does not start with BOS ({bos!r}): the tokenizer breaks the BOS contract"
        )
    labels[0] = IGNORE_INDEX
    return input_ids, labels


class PromptBuilder:
    """The original Prismatic prompt-builder API on top of any ``PromptFormat``.

        builder = PromptBuilder(llm_prompt_format)
        builder.add_turn("human", "What colour is the shape?")
        text = builder.get_prompt()          # generate from this

    Roles are ``"human"`` and ``"gpt"`` and must alternate starting with ``"human"`` (``PromptFormatError``
    names the offending turn). ``add_turn`` returns exactly the text the turn adds to the conversation.
    """

    def __init__(self, prompt_format: PromptFormat) -> None:
        self.prompt_format = prompt_format
        self.turns: list[Turn] = []

    @classmethod
    def from_kind(cls, kind: str, tokenizer: Any = None, **fields: Any) -> PromptBuilder:
        """A builder for an installed prompt-format kind, e.g. ``PromptBuilder.from_kind("vicuna-v1.5")``."""
        from prism_core.spec import PromptFormatSpec, structure_component

        spec = structure_component({"kind": kind, **fields}, PromptFormatSpec)
        return cls(spec.build(tokenizer=tokenizer))  # type: ignore[attr-defined]

    @property
    def system_prompt(self) -> str | None:
        return self.prompt_format.system_prompt

    def add_turn(self, role: str, message: str) -> str:
        turns = [*self.turns, Turn(role, message)]
        added = self.prompt_format.render(turns)[-1].text  # validates the role order before anything changes
        self.turns = turns
        return added

    def get_potential_prompt(self, message: str) -> str:
        """The prompt as it would be after a human turn with ``message`` (the builder is not changed)."""
        return self.prompt_format.prompt([*self.turns, Turn("human", message)])

    def get_prompt(self) -> str:
        """The text to generate from: BOS string removed where the tokenizer adds it, trailing space stripped."""
        return self.prompt_format.prompt(self.turns) if self.turns else ""
