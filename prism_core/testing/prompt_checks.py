"""The train/inference tokenization contract, as an assertion any plugin's tests can call:

    assert_training_matches_generation(tokenizer, prompt_format, sample_conversation(3))

For every assistant turn of the conversation, the training ids before its answer must equal
``tokenizer(PromptBuilder(...).get_prompt()).input_ids`` for the same history (what generation feeds), and the
supervised span must be exactly the answer text plus the format's end-of-turn text. The conformance suites run it
for prompt formats over real tokenizers (``prism_core.testing.tokenizers``) and for LLM backbones with their own
tokenizer and default prompt format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prism_core.types import ASSISTANT, HUMAN, IGNORE_INDEX, Turn

# Questions and answers with what real data has: <image> markers, punctuation, digits, stray whitespace,
# non-ASCII, a line break inside an answer, quotes; and one empty answer (formats write it as " ").
_EXCHANGES = [
    ("<image>\nWhat colour is the shape?", "red"),
    ("  How many shapes are there?  ", "There are 3 shapes: a circle, a square and a triangle."),
    ("Describe the café in one line.", "A small café.\nIt is blue."),
    ('Is this statement "True" or "False"? The dog sleeps.', "True"),
    ("And now?", ""),
]


def sample_conversation(exchanges: int, *, start: int = 0) -> list[Turn]:
    """``exchanges`` human/assistant pairs (rotating through the samples from ``start``)."""
    turns = []
    for k in range(exchanges):
        question, answer = _EXCHANGES[(start + k) % len(_EXCHANGES)]
        turns += [Turn(HUMAN, question), Turn(ASSISTANT, answer)]
    return turns


def _spans(labels: Sequence[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _squeeze(text: str) -> str:
    # Whitespace is compared loosely (decoders differ on spaces around special tokens); the slow SentencePiece
    # decoder spells a byte-fallback newline <0x0A>.
    return "".join(text.replace("<0x0A>", "\n").split())


def _show(tokenizer: Any, ids: Sequence[int]) -> str:
    return " ".join(repr(t) for t in tokenizer.convert_ids_to_tokens(list(ids)))


def assert_training_matches_generation(tokenizer: Any, prompt_format: Any, turns: Sequence[Turn]) -> None:
    """Fail, with the tokens around the difference, where training tokenization and generation disagree."""
    from prism_core.prompting import PromptBuilder, tokenize_conversation

    name = f"{getattr(prompt_format, 'kind', type(prompt_format).__name__)} / {type(tokenizer).__name__}"
    ids, labels = tokenize_conversation(tokenizer, prompt_format, turns)
    assert len(ids) == len(labels), name
    segments = prompt_format.render(turns)
    answers = [(i, turn) for i, turn in enumerate(turns) if turn.role == ASSISTANT]
    spans = _spans(labels)
    assert len(spans) == len(answers), (f"{name}: {len(answers)} answers but {len(spans)} supervised spans: "
                                        f"{_show(tokenizer, ids)}")
    builder = PromptBuilder(prompt_format)
    for (index, turn), (start, end) in zip(answers, spans, strict=True):
        for earlier in turns[len(builder.turns):index]:
            builder.add_turn(earlier.role, earlier.message)
        expected = tokenizer(builder.get_prompt()).input_ids
        assert ids[:start] == expected, (
            f"{name}, turn {index}: training ids before the answer differ from the generation prompt's\n"
            f"  training:   {_show(tokenizer, ids[max(0, start - 6):start])}\n"
            f"  generation: {_show(tokenizer, expected[-6:])}")
        last_prompt_token = tokenizer.convert_ids_to_tokens([ids[start - 1]])[0]
        assert last_prompt_token not in ("▁", "Ġ", " "), f"{name}, turn {index}: the prompt ends in a bare space token"
        assert labels[start:end] == ids[start:end], f"{name}, turn {index}: labels are not the input ids"
        text = segments[index].text
        message = turn.message.replace("<image>", "").strip()
        end_of_turn = text[text.rfind(message) + len(message):] if message else text  # "" is written as " "
        supervised = tokenizer.decode(ids[start:end], skip_special_tokens=False)
        assert _squeeze(supervised) == _squeeze(message + end_of_turn), (
            f"{name}, turn {index}: supervised {supervised!r}, expected the answer {message!r} + {end_of_turn!r}")
        builder.add_turn(turn.role, turn.message)


__all__ = ["assert_training_matches_generation", "sample_conversation"]
