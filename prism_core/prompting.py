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
