"""tokenize_conversation with the tiny tokenizer: exactly the assistant answers and their </s> are supervised, and
the ids before each answer are the generation prompt's (the real-tokenizer versions of these checks run in the
prompt-format conformance suite)."""

from __future__ import annotations

from typing import Any

import pytest
from prism_plugin_llama2 import load_tiny_tokenizer

from prism_core.prompting import tokenize_conversation
from prism_core.spec import PromptFormatSpec, structure_component
from prism_core.testing.prompt_checks import assert_training_matches_generation
from prism_core.types import IGNORE_INDEX, Turn

TURNS = [
    Turn("human", "<image>\nWhat colour is the star?"),
    Turn("gpt", "yellow"),
    Turn("human", "How many stars are there?"),
    Turn("gpt", "three"),
]


@pytest.fixture(scope="module")
def tok() -> Any:
    return load_tiny_tokenizer()


def spans(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of supervised positions."""
    out: list[tuple[int, int]] = []
    for i, label in enumerate(labels):
        if label == IGNORE_INDEX:
            continue
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


@pytest.mark.parametrize(
    ("kind", "answers"),
    [
        ("pure", ["yellow</s>", "three</s>"]),
        ("vicuna-v1.5", ["yellow</s>", "three</s>"]),
        ("llama2-chat", ["yellow</s>", "three</s>"]),
        ("llama2-chat-fixed", ["yellow</s>", "three</s>"]),  # "yellow </s>": the space before </s> is trailing
        ("mistral-instruct", ["yellow</s>", "three</s>"]),
    ],
)
def test_only_answers_and_their_eos_are_supervised(tok: Any, kind: str, answers: list[str]) -> None:
    fmt = structure_component({"kind": kind}, PromptFormatSpec).build()
    ids, labels = tokenize_conversation(tok, fmt, TURNS)
    assert len(ids) == len(labels)
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE_INDEX
    found = spans(labels)
    assert len(found) == 2, found
    for (start, end), answer in zip(found, answers, strict=True):
        assert labels[start:end] == ids[start:end]
        assert tok.decode(ids[start:end]).strip() == answer  # the answer's word token carries its space
        assert ids[end - 1] == tok.eos_token_id
    assert_training_matches_generation(tok, fmt, TURNS)


def test_answer_tokens_are_the_ones_generation_produces(tok: Any) -> None:
    """Training ids end with the stripped prompt's ids, then the answer as the tokenizer writes it after "Out:"."""
    fmt = structure_component({"kind": "pure"}, PromptFormatSpec).build()
    ids, labels = tokenize_conversation(tok, fmt, TURNS[:2])
    prompt_ids = tok(fmt.prompt(TURNS[:1])).input_ids
    assert ids[: len(prompt_ids)] == prompt_ids
    assert labels[len(prompt_ids)] == tok(" yellow", add_special_tokens=False).input_ids[0]
