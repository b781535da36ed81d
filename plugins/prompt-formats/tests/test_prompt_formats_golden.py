"""Golden strings: each format reproduces the original builders' text exactly (prismatic-inventory §3.4)."""

from __future__ import annotations

import pytest
from prism_plugin_prompt_formats import formats
from prism_plugin_prompt_formats.spec import (
    LLAMA2_SYSTEM_PROMPT,
    VICUNA_SYSTEM_PROMPT,
    Llama2ChatFixedPromptSpec,
    Llama2ChatPromptSpec,
    MistralInstructPromptSpec,
    Phi2PromptSpec,
    PurePromptSpec,
    VicunaV15PromptSpec,
)

from prism_core.prompting import PromptBuilder, PromptFormatError
from prism_core.types import Segment, Turn

# Raw messages: the <image> marker and the surrounding whitespace must disappear.
TURNS = [
    Turn("human", "<image>\nWhat colour is the shape?"),
    Turn("gpt", "red"),
    Turn("human", "  How many sides does it have?  "),
]
Q1, Q2 = "What colour is the shape?", "How many sides does it have?"
VSYS = VICUNA_SYSTEM_PROMPT
LSYS = LLAMA2_SYSTEM_PROMPT

# (spec, [text of turn 1, 2, 3], [prompt after 1, 2, 3 turns])
GOLDEN = {
    "pure": (
        PurePromptSpec(),
        [f"In: {Q1}\nOut: ", "red</s>", f"In: {Q2}\nOut: "],
        [f"In: {Q1}\nOut:", f"In: {Q1}\nOut: red</s>", f"In: {Q1}\nOut: red</s>In: {Q2}\nOut:"],
    ),
    "vicuna-v1.5": (
        VicunaV15PromptSpec(),
        [f"{VSYS} USER: {Q1} ASSISTANT: ", "red</s>", f"USER: {Q2} ASSISTANT: "],
        [f"{VSYS} USER: {Q1} ASSISTANT:", f"{VSYS} USER: {Q1} ASSISTANT: red</s>",
         f"{VSYS} USER: {Q1} ASSISTANT: red</s>USER: {Q2} ASSISTANT:"],
    ),
    "vicuna-v1.5/custom-system": (
        VicunaV15PromptSpec(system_prompt="  Be brief.  "),
        [f"Be brief. USER: {Q1} ASSISTANT: ", "red</s>", f"USER: {Q2} ASSISTANT: "],
        [f"Be brief. USER: {Q1} ASSISTANT:", f"Be brief. USER: {Q1} ASSISTANT: red</s>",
         f"Be brief. USER: {Q1} ASSISTANT: red</s>USER: {Q2} ASSISTANT:"],
    ),
    "llama2-chat": (  # the original's "<<SYS>" typo, on purpose
        Llama2ChatPromptSpec(),
        [f"[INST] <<SYS>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST] ", "red</s>", f"[INST] {Q2} [/INST] "],
        [f"[INST] <<SYS>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST]", f"[INST] <<SYS>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST] red</s>",
         f"[INST] <<SYS>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST] red</s>[INST] {Q2} [/INST]"],
    ),
    "llama2-chat/custom-system": (
        Llama2ChatPromptSpec(system_prompt="Be brief."),
        [f"[INST] <<SYS>\nBe brief.\n<</SYS>>\n\n{Q1} [/INST] ", "red</s>", f"[INST] {Q2} [/INST] "],
        [f"[INST] <<SYS>\nBe brief.\n<</SYS>>\n\n{Q1} [/INST]",
         f"[INST] <<SYS>\nBe brief.\n<</SYS>>\n\n{Q1} [/INST] red</s>",
         f"[INST] <<SYS>\nBe brief.\n<</SYS>>\n\n{Q1} [/INST] red</s>[INST] {Q2} [/INST]"],
    ),
    "llama2-chat-fixed": (
        Llama2ChatFixedPromptSpec(),
        [f"[INST] <<SYS>>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST] ", "red </s>", f"<s>[INST] {Q2} [/INST] "],
        [f"[INST] <<SYS>>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST]",
         f"[INST] <<SYS>>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST] red </s>",
         f"[INST] <<SYS>>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST] red </s><s>[INST] {Q2} [/INST]"],
    ),
    "llama2-chat-fixed/no-system": (
        Llama2ChatFixedPromptSpec(system_prompt=""),
        [f"[INST] {Q1} [/INST] ", "red </s>", f"<s>[INST] {Q2} [/INST] "],
        [f"[INST] {Q1} [/INST]", f"[INST] {Q1} [/INST] red </s>",
         f"[INST] {Q1} [/INST] red </s><s>[INST] {Q2} [/INST]"],
    ),
    "mistral-instruct": (
        MistralInstructPromptSpec(),
        [f"[INST] {Q1} [/INST] ", "red</s>", f"[INST] {Q2} [/INST] "],
        [f"[INST] {Q1} [/INST]", f"[INST] {Q1} [/INST] red</s>", f"[INST] {Q1} [/INST] red</s>[INST] {Q2} [/INST]"],
    ),
    "phi-2": (  # BOS written into the first turn and kept in the prompt (Phi's tokenizer adds none)
        Phi2PromptSpec(),
        [f"<|endoftext|>Input: {Q1}\nOutput: ", "red\n<|endoftext|>", f"Input: {Q2}\nOutput: "],
        [f"<|endoftext|>Input: {Q1}\nOutput:", f"<|endoftext|>Input: {Q1}\nOutput: red\n<|endoftext|>",
         f"<|endoftext|>Input: {Q1}\nOutput: red\n<|endoftext|>Input: {Q2}\nOutput:"],
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
@pytest.mark.parametrize("n_turns", [1, 2, 3])
def test_render_and_prompt_match_the_original_strings(name: str, n_turns: int) -> None:
    spec, texts, prompts = GOLDEN[name]
    fmt = spec.build()
    expected = [Segment(text, supervised=i % 2 == 1) for i, text in enumerate(texts[:n_turns])]
    assert fmt.render(TURNS[:n_turns]) == expected
    assert fmt.prompt(TURNS[:n_turns]) == prompts[n_turns - 1]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_prompt_builder_returns_exactly_the_added_text(name: str) -> None:
    spec, texts, prompts = GOLDEN[name]
    builder = PromptBuilder(spec.build())
    assert builder.get_prompt() == ""
    for turn, text, prompt in zip(TURNS, texts, prompts, strict=True):
        assert builder.add_turn(turn.role, turn.message) == text
        assert builder.get_prompt() == prompt


# The original builders' get_potential_prompt(message): the message goes in as given (no <image> removal, no strip),
# and Phi's first turn gets no <|endoftext|> (only add_turn writes it). (first turn, after TURNS[:2])
R1, R2 = TURNS[0].message, TURNS[2].message
POTENTIAL = {
    "pure": (f"In: {R1}\nOut:", f"In: {Q1}\nOut: red</s>In: {R2}\nOut:"),
    "vicuna-v1.5": (f"{VSYS} USER: {R1} ASSISTANT:", f"{VSYS} USER: {Q1} ASSISTANT: red</s>USER: {R2} ASSISTANT:"),
    "vicuna-v1.5/custom-system": (f"Be brief. USER: {R1} ASSISTANT:",
                                  f"Be brief. USER: {Q1} ASSISTANT: red</s>USER: {R2} ASSISTANT:"),
    "llama2-chat": (f"[INST] <<SYS>\n{LSYS}\n<</SYS>>\n\n{R1} [/INST]",
                    f"[INST] <<SYS>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST] red</s>[INST] {R2} [/INST]"),
    "llama2-chat/custom-system": (f"[INST] <<SYS>\nBe brief.\n<</SYS>>\n\n{R1} [/INST]",
                                  f"[INST] <<SYS>\nBe brief.\n<</SYS>>\n\n{Q1} [/INST] red</s>[INST] {R2} [/INST]"),
    "llama2-chat-fixed": (f"[INST] <<SYS>>\n{LSYS}\n<</SYS>>\n\n{R1} [/INST]",
                          f"[INST] <<SYS>>\n{LSYS}\n<</SYS>>\n\n{Q1} [/INST] red </s><s>[INST] {R2} [/INST]"),
    "llama2-chat-fixed/no-system": (f"[INST] {R1} [/INST]", f"[INST] {Q1} [/INST] red </s><s>[INST] {R2} [/INST]"),
    "mistral-instruct": (f"[INST] {R1} [/INST]", f"[INST] {Q1} [/INST] red</s>[INST] {R2} [/INST]"),
    "phi-2": (f"Input: {R1}\nOutput:", f"<|endoftext|>Input: {Q1}\nOutput: red\n<|endoftext|>Input: {R2}\nOutput:"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_get_potential_prompt_returns_what_the_original_returns(name: str) -> None:
    first, after_two = POTENTIAL[name]
    builder = PromptBuilder(GOLDEN[name][0].build())
    assert builder.get_potential_prompt(R1) == first
    assert builder.get_prompt() == "" and builder.turns == [], "get_potential_prompt must not change the builder"
    builder.add_turn("human", TURNS[0].message)
    builder.add_turn("gpt", TURNS[1].message)
    assert builder.get_potential_prompt(R2) == after_two


def test_system_prompt_attribute() -> None:
    assert PurePromptSpec().build().system_prompt is None
    assert MistralInstructPromptSpec().build().system_prompt is None
    assert VicunaV15PromptSpec().build().system_prompt == VICUNA_SYSTEM_PROMPT
    assert Llama2ChatPromptSpec().build().system_prompt == LLAMA2_SYSTEM_PROMPT
    assert Llama2ChatFixedPromptSpec(system_prompt="").build().system_prompt is None


def test_spec_defaults_match_the_implementation_constants() -> None:
    assert VICUNA_SYSTEM_PROMPT == formats.VICUNA_SYSTEM_PROMPT
    assert LLAMA2_SYSTEM_PROMPT == formats.LLAMA2_SYSTEM_PROMPT


def test_empty_answer_becomes_a_space() -> None:
    segments = PurePromptSpec().build().render([Turn("human", "q"), Turn("gpt", "  <image> ")])
    assert segments[1] == Segment(" </s>", supervised=True)


def test_braces_in_messages_are_kept_verbatim() -> None:
    fmt = VicunaV15PromptSpec(system_prompt="sys {message}").build()
    assert fmt.render([Turn("human", "use {system} and {0}")])[0].text == \
        "sys {message} USER: use {system} and {0} ASSISTANT: "


@pytest.mark.parametrize(
    ("turns", "match"),
    [
        ([Turn("gpt", "a")], r"turn 0: expected role 'human', got 'gpt'"),
        ([Turn("human", "a"), Turn("human", "b")], r"turn 1: expected role 'gpt', got 'human'"),
        ([Turn("human", "a"), Turn("gpt", "b"), Turn("gpt", "c")], r"turn 2: expected role 'human'"),
        ([Turn("human", "a"), Turn("user", "b")], r"turn 1: unknown role 'user'"),
    ],
)
def test_role_order_errors_name_the_turn(turns: list[Turn], match: str) -> None:
    with pytest.raises(PromptFormatError, match=match):
        PurePromptSpec().build().render(turns)


def test_builder_is_unchanged_after_a_rejected_turn() -> None:
    builder = PromptBuilder(PurePromptSpec().build())
    builder.add_turn("human", "q")
    with pytest.raises(PromptFormatError, match="turn 1"):
        builder.add_turn("human", "again")
    assert builder.add_turn("gpt", "a") == "a</s>"


def test_builder_from_kind_uses_the_installed_plugin() -> None:
    builder = PromptBuilder.from_kind("vicuna-v1.5", system_prompt="Hi.")
    assert builder.get_potential_prompt("q") == "Hi. USER: q ASSISTANT:"
    assert builder.system_prompt == "Hi."
