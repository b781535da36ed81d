"""chat-template: segments come from the tokenizer's own Jinja template; labels supervise exactly the answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prism_plugin_prompt_formats.spec import ChatTemplatePromptSpec

from prism_core.prompting import PromptFormatError, tokenize_conversation
from prism_core.testing.toys import write_byte_tokenizer
from prism_core.types import IGNORE_INDEX, Segment, Turn

CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TURNS = [Turn("human", "<image>\nWhat colour?"), Turn("gpt", "red"), Turn("human", " Shape? ")]
USER1 = "<|im_start|>user\nWhat colour?<|im_end|>\n<|im_start|>assistant\n"
ANSWER1 = "red<|im_end|>\n"
USER2 = "<|im_start|>user\nShape?<|im_end|>\n<|im_start|>assistant\n"


def chatml_tokenizer(tmp_path: Path, *, add_bos: bool = True, template: str | None = CHATML) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        write_byte_tokenizer(tmp_path / "tok", add_bos=add_bos, specials=("<|im_start|>", "<|im_end|>"))
    )
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture
def tokenizer(tmp_path: Path) -> Any:
    return chatml_tokenizer(tmp_path)


@pytest.mark.parametrize("n_turns", [1, 2, 3])
def test_segments_are_the_template_text_turn_by_turn(tokenizer: Any, n_turns: int) -> None:
    fmt = ChatTemplatePromptSpec().build(tokenizer=tokenizer)
    # The tokenizer adds BOS, so the template's own "<s>" is dropped (no double BOS).
    expected = [Segment(USER1, False), Segment(ANSWER1, True), Segment(USER2, False)][:n_turns]
    assert fmt.render(TURNS[:n_turns]) == expected
    # The generation prompt ends as the template writes it ("assistant\n"): only trailing spaces are stripped.
    assert fmt.prompt(TURNS[:n_turns]) == "".join(s.text for s in expected).rstrip(" ")


def test_system_prompt_becomes_a_system_message(tokenizer: Any) -> None:
    fmt = ChatTemplatePromptSpec(system_prompt="Be brief.").build(tokenizer=tokenizer)
    assert fmt.system_prompt == "Be brief."
    assert fmt.prompt(TURNS[:1]) == "<|im_start|>system\nBe brief.<|im_end|>\n" + USER1


def test_bos_text_is_kept_when_the_tokenizer_adds_none(tmp_path: Path) -> None:
    fmt = ChatTemplatePromptSpec().build(tokenizer=chatml_tokenizer(tmp_path, add_bos=False))
    assert fmt.render(TURNS[:1])[0].text == "<s>" + USER1


def test_template_field_overrides_the_tokenizer(tokenizer: Any) -> None:
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    fmt = ChatTemplatePromptSpec(template=template).build(tokenizer=tokenizer)
    assert [s.text for s in fmt.render(TURNS[:2])] == ["[user] What colour?\n", "[assistant] red\n"]


def test_labels_supervise_exactly_the_answers_and_their_end_of_turn(tokenizer: Any) -> None:
    fmt = ChatTemplatePromptSpec().build(tokenizer=tokenizer)
    turns = [*TURNS, Turn("gpt", "square")]
    ids, labels = tokenize_conversation(tokenizer, fmt, turns)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    supervised = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert all(labels[i] == ids[i] for i in supervised)
    text = tokenizer.decode([ids[i] for i in supervised], skip_special_tokens=False)
    assert text == "red<|im_end|>\nsquare<|im_end|>\n"
    unsupervised = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label == IGNORE_INDEX])
    assert unsupervised == "<s>" + USER1 + USER2


def test_missing_tokenizer_or_template_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PromptFormatError, match="needs the tokenizer"):
        ChatTemplatePromptSpec().build()
    with pytest.raises(PromptFormatError, match="has no chat_template"):
        ChatTemplatePromptSpec().build(tokenizer=chatml_tokenizer(tmp_path, template=None))


def test_template_that_rewrites_earlier_turns_is_rejected(tokenizer: Any) -> None:
    counting = "{{ messages | length }} turns: {% for m in messages %}{{ m['content'] }} {% endfor %}"
    fmt = ChatTemplatePromptSpec(template=counting).build(tokenizer=tokenizer)
    with pytest.raises(PromptFormatError, match="turn 1"):
        fmt.render(TURNS[:2])
