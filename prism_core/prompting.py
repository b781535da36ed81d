"""Prompt building on top of any ``PromptFormat``: the original Prismatic ``PromptBuilder`` API, and turning a
conversation into ``(input_ids, labels)`` turn by turn so labels are never guessed by re-tokenizing the prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prism_core.types import HUMAN, IGNORE_INDEX, Turn

if TYPE_CHECKING:
    from prism_core.protocols import PromptFormat


class ConversationError(ValueError):
    """A conversation that cannot be trained on; the message names the turn or the problem."""


class PromptFormatError(ConversationError):
    """A conversation a prompt format cannot render (roles out of order, unknown role); names the turn index."""


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """The ids a prompt is generated from: ``text`` with the tokenizer's special tokens (its BOS)."""
    return tokenizer(text).input_ids


def answer_gap(prompt_format: PromptFormat) -> str:
    """The text between a prompt and its answer: what ``prompt()`` leaves off the end of a rendered human turn
    (``" "`` after ``Out:`` for ``pure``; nothing for a chat template that ends its prompt with a newline)."""
    turns = [Turn(HUMAN, "?")]
    return _gap("".join(segment.text for segment in prompt_format.render(turns)), prompt_format.prompt(turns))


def _gap(rendered: str, prompt: str) -> str:
    end = rendered.rfind(prompt)
    return rendered[end + len(prompt):] if prompt and end >= 0 else ""


def continuation_ids(tokenizer: Any, prompt_ids: Sequence[int], prompt: str, continuation: str) -> list[int] | None:
    """The ids ``continuation`` adds after ``prompt`` when both are tokenized as one text (so a SentencePiece
    ``▁answer`` or a BPE ``Ġanswer`` comes out as the tokenizer writes it mid-sentence), or ``None`` when the
    tokenizer merges across the boundary and the prompt's own ids are not a prefix of the joint ids."""
    joint = encode_prompt(tokenizer, prompt + continuation)
    if joint[:len(prompt_ids)] != list(prompt_ids):
        return None
    return joint[len(prompt_ids):]


def tokenize_conversation(
    tokenizer: Any, prompt_format: PromptFormat, turns: Sequence[Turn]
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for a conversation, tokenized exactly as generation will see it.

    Before each assistant turn the ids are ``encode_prompt(prompt_format.prompt(history))``: the very ids
    ``generate`` is given for that history, so training never sees a token inference does not (a lone ``▁`` for
    the trailing space of ``"Out: "`` on SentencePiece tokenizers, which every Llama-family run would otherwise
    learn). The answer's ids are what it adds when prompt, gap and answer are tokenized as one text; they, and the
    end-of-turn text the format writes after the answer, are the labels. Everything else is ``IGNORE_INDEX``,
    the leading BOS always. A tokenizer that merges tokens across a turn boundary cannot satisfy this and raises
    ``ConversationError`` naming the turn.
    """
    if not turns:
        raise ConversationError("empty conversation")
    segments = prompt_format.render(turns)
    input_ids: list[int] = []
    labels: list[int] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if not segment.supervised and not last:
            continue  # its text arrives with the prompt of the next assistant turn
        prompt = prompt_format.prompt(turns[:i] if segment.supervised else turns)
        prompt_ids = encode_prompt(tokenizer, prompt)
        if prompt_ids[:len(input_ids)] != input_ids:
            raise ConversationError(f"turn {i - 1 if segment.supervised else i}: the tokenizer merges tokens across "
                                    "the end of the previous turn, so training ids cannot match the prompt's")
        labels += [IGNORE_INDEX] * (len(prompt_ids) - len(input_ids))
        input_ids = prompt_ids
        if not segment.supervised:
            break
        gap = _gap("".join(s.text for s in segments[:i]), prompt)
        answer = continuation_ids(tokenizer, prompt_ids, prompt, gap + segment.text)
        if answer is None:
            raise ConversationError(f"turn {i}: the tokenizer merges the answer with the end of the prompt, so "
                                    "training ids cannot match the prompt's")
        input_ids = input_ids + answer
        labels += answer
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
        """The prompt as it would be after a human turn with ``message`` (the builder is not changed).

        Formats that reproduce an original Prismatic builder return exactly what its ``get_potential_prompt``
        returns (``potential_prompt``: the message as given, not cleaned); others render the turn as usual."""
        potential = getattr(self.prompt_format, "potential_prompt", None)
        if potential is not None:
            return potential(self.turns, message)
        return self.prompt_format.prompt([*self.turns, Turn(HUMAN, message)])

    def get_prompt(self) -> str:
        """The text to generate from: BOS string removed where the tokenizer adds it, trailing space stripped."""
        return self.prompt_format.prompt(self.turns) if self.turns else ""
