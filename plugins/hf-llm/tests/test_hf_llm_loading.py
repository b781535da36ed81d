"""hf-causal-lm on local save_pretrained directories: PAD/resizing, the BOS contract, Phi-2's special case,
tokens, attention kernels and fast, explained failures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from prism_plugin_hf_llm.loading import BOSContractError, LLMLoadError, resolve_token
from prism_plugin_hf_llm.spec import HFCausalLMSpec

from prism_core.prompting import tokenize_conversation
from prism_core.testing.toys import write_byte_tokenizer
from prism_core.types import IGNORE_INDEX, Turn

TINY = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 96}


def save_model(directory: Path, model_type: str, vocab_size: int, **config: Any) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    cfg = AutoConfig.for_model(model_type, vocab_size=vocab_size, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, **TINY, **config)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = write_byte_tokenizer(tmp_path_factory.mktemp("mistral"))
    return save_model(directory, "mistral", vocab_size=258, sliding_window=16)


@pytest.fixture(scope="module")
def phi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Like Phi-2: BOS == EOS == <|endoftext|>, and the tokenizer adds no BOS by itself.
    directory = write_byte_tokenizer(tmp_path_factory.mktemp("phi"), bos="<|endoftext|>", eos="<|endoftext|>",
                                     add_bos=False)
    return save_model(directory, "phi", vocab_size=320, partial_rotary_factor=0.5)


def test_local_directory_loads_with_pad_added_and_rows_padded_to_64(mistral_dir: Path) -> None:
    llm = HFCausalLMSpec(model_id=str(mistral_dir), prompt_format="mistral-instruct").build()
    tok = llm.tokenizer
    assert tok.pad_token == "<PAD>" and len(tok) == 259 and tok.padding_side == "right"
    assert llm.llm.get_input_embeddings().weight.shape[0] == 320  # 259 -> next multiple of 64
    assert llm.llm.config.pad_token_id == tok.pad_token_id
    assert [c.__name__ for c in llm.decoder_layer_classes] == ["MistralDecoderLayer"]
    assert llm.default_prompt_format == "mistral-instruct" and not llm.bos_in_prompt_text
    # Pretrained rows are kept.
    from safetensors.torch import load_file

    saved = load_file(mistral_dir / "model.safetensors")["model.embed_tokens.weight"]
    assert torch.equal(llm.llm.get_input_embeddings().weight[:258], saved)


def test_phi_needs_its_declared_special_case(phi_dir: Path) -> None:
    with pytest.raises(BOSContractError, match="bos_in_prompt_text"):
        HFCausalLMSpec(model_id=str(phi_dir)).build()
    llm = HFCausalLMSpec(model_id=str(phi_dir), pad_token="<|pad|>", bos_in_prompt_text=True,
                         prompt_format="phi-2").build()
    tok = llm.tokenizer
    assert tok.pad_token == "<|pad|>" and llm.bos_in_prompt_text
    assert llm.llm.get_input_embeddings().weight.shape[0] == 320  # 259 entries fit the saved 320 rows
    assert [c.__name__ for c in llm.decoder_layer_classes] == ["PhiDecoderLayer"]

    from prism_plugin_prompt_formats.spec import Phi2PromptSpec

    turns = [Turn("human", "What colour?"), Turn("gpt", "red")]
    ids, labels = tokenize_conversation(tok, Phi2PromptSpec().build(), turns)
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id and labels[0] == IGNORE_INDEX
    supervised = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert tok.decode(supervised) == " red\n<|endoftext|>"  # a byte-level BPE writes the answer's space in it
    assert ids[:labels.index(supervised[0])] == tok(Phi2PromptSpec().build().prompt(turns[:1])).input_ids


def test_tokenizer_adding_no_bos_is_rejected_with_the_reason(tmp_path: Path) -> None:
    directory = write_byte_tokenizer(tmp_path / "tok", add_bos=False)
    spec = HFCausalLMSpec(weights="random", model_type="llama", tokenizer_id=str(directory), **TINY)
    with pytest.raises(BOSContractError, match=r"must start with exactly one BOS"):
        spec.build()


def test_flash_attention_without_the_package_is_a_clear_error(mistral_dir: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(LLMLoadError, match="flash-attn"):
        HFCausalLMSpec(model_id=str(mistral_dir), attn_implementation="flash_attention_2").build()


def test_missing_or_weightless_directories_are_named(tmp_path: Path, mistral_dir: Path) -> None:
    with pytest.raises(LLMLoadError, match="does not exist"):
        HFCausalLMSpec(model_id=str(tmp_path / "nope")).build()
    empty = write_byte_tokenizer(tmp_path / "empty")
    (empty / "config.json").write_text((mistral_dir / "config.json").read_text())
    with pytest.raises(LLMLoadError, match="has no weights"):
        HFCausalLMSpec(model_id=str(empty)).build()


def test_hub_id_missing_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    spec = HFCausalLMSpec.from_preset("mistral-v0.1-7b-instruct")
    start = time.perf_counter()
    with pytest.raises(LLMLoadError, match=r"hf download mistralai/Mistral-7B-Instruct-v0\.1"):
        spec.build()
    assert time.perf_counter() - start < 1.0


def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hf_from_file\n")
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert resolve_token(str(token_file)) == "hf_from_file"
    assert resolve_token(None) == "hf_from_env"
    with pytest.raises(LLMLoadError, match="does not exist"):
        resolve_token(str(tmp_path / "missing"))


def test_random_weights_from_a_directory_config(mistral_dir: Path) -> None:
    llm = HFCausalLMSpec(model_id=str(mistral_dir), weights="random", hidden_size=32, num_attention_heads=2,
                         num_key_value_heads=2).build()
    assert llm.embed_dim == 32 and llm.llm.config.model_type == "mistral"
