"""The shipped tiny tokenizer: single-token words, no unknown token, BOS contract, reproducible from its script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prism_plugin_llama2 import TINY_TOKENIZER_DIR, load_tiny_tokenizer
from prism_plugin_llama2.build_tiny_tokenizer import SINGLE_TOKEN_WORDS, build


@pytest.fixture(scope="module")
def tok() -> Any:
    return load_tiny_tokenizer()


def test_brief_words_are_all_listed() -> None:
    for word in ["magenta", "hexagons", "ellipses", "False", "ten", "0", "9", "Describe", "Z", "[INST]", "[/INST]",
                 "ASSISTANT", "Output"]:
        assert word in SINGLE_TOKEN_WORDS


@pytest.mark.parametrize("word", SINGLE_TOKEN_WORDS)
def test_word_is_one_token_with_and_without_leading_space(tok: Any, word: str) -> None:
    for text in (word, f" {word}"):
        ids = tok(text, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"{text!r} -> {tok.convert_ids_to_tokens(ids)}"
        assert tok.decode(ids) == text


def test_specials_size_and_padding(tok: Any) -> None:
    assert len(tok) <= 2048
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<PAD>")
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert tok.padding_side == "right" and tok.unk_token is None


def test_bos_contract(tok: Any) -> None:
    assert tok("In: What colour is the shape?").input_ids[:2] != [tok.bos_token_id] * 2
    assert tok("In: What colour is the shape?").input_ids[0] == tok.bos_token_id
    assert tok.bos_token_id not in tok("In: What colour is the shape?", add_special_tokens=False).input_ids


TEXTS = ["héllo wörld", "日本語のテキスト", "emoji 🙂🚀", "\x00\x7f tabs\tand\nlines", "Ω≈ç√∫"]


@pytest.mark.parametrize("text", TEXTS)
def test_any_text_round_trips_without_unknown_tokens(tok: Any, text: str) -> None:
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text


def test_trailing_whitespace_is_dropped_so_training_matches_the_stripped_prompt(tok: Any) -> None:
    assert tok("In: q\nOut: ").input_ids == tok("In: q\nOut:").input_ids


def test_the_build_script_reproduces_the_shipped_files(tmp_path: Path) -> None:
    build(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (TINY_TOKENIZER_DIR / name).read_bytes(), name
