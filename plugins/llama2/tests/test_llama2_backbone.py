"""llama-tiny as a backbone: config, save/reload, generation (batched, left-padded, cached, sampled, EOS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from prism_plugin_llama2 import Llama2Spec

from prism_core.types import IGNORE_INDEX

PROMPTS = ["In: What colour is the star?\nOut:", "In: How many hexagons are there in the picture?\nOut:", "In: Is"]


@pytest.fixture(scope="module")
def llm() -> Any:
    return Llama2Spec.from_preset("llama-tiny").build().eval()


def test_tiny_config_is_the_quickstart_llm(llm: Any) -> None:
    config = llm.llm.config
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("llama", 128, 2)
    assert config.initializer_range == 0.08 and llm.llm.config._attn_implementation == "sdpa"
    assert llm.embed_dim == 128 and llm.default_prompt_format == "pure"
    assert config.pad_token_id == llm.tokenizer.pad_token_id
    assert llm.llm.get_input_embeddings().weight.shape[0] % 64 == 0
    assert llm.llm.get_input_embeddings().weight.shape[0] >= len(llm.tokenizer)
    assert abs(llm.llm.model.layers[0].mlp.up_proj.weight.std().item() - 0.08) < 0.005


def test_architecture_fields_override_the_preset() -> None:
    spec = Llama2Spec.from_preset("llama-tiny", hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  num_key_value_heads=2, intermediate_size=96, initializer_range=0.02)
    config = spec.build().llm.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == \
        (64, 1, 2, 96)
    assert config.initializer_range == 0.02


def test_random_init_is_deterministic_in_init_seed() -> None:
    first = Llama2Spec.from_preset("llama-tiny").build().state_dict()
    again = Llama2Spec.from_preset("llama-tiny").build().state_dict()
    other = Llama2Spec.from_preset("llama-tiny", init_seed=1).build().state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["llm.model.embed_tokens.weight"], other["llm.model.embed_tokens.weight"])


def test_save_pretrained_reloads_bit_exactly(llm: Any, tmp_path: Path) -> None:
    llm.save_pretrained(tmp_path / "tiny")
    assert (tmp_path / "tiny" / "model.safetensors").is_file()
    reloaded = Llama2Spec.from_preset("llama-tiny", model_id=str(tmp_path / "tiny"), weights="pretrained",
                                      tokenizer_id=None).build()
    before, after = llm.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert reloaded.tokenizer.pad_token_id == llm.tokenizer.pad_token_id
    assert reloaded.tokenizer("red circle").input_ids == llm.tokenizer("red circle").input_ids


def test_loss_is_shifted_cross_entropy_over_supervised_tokens(llm: Any) -> None:
    ids = torch.tensor([llm.tokenizer("In: What colour?\nOut: red</s>").input_ids])
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    with torch.no_grad():
        out = llm(inputs_embeds=llm.embed_input_ids(ids), attention_mask=torch.ones_like(ids), labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=IGNORE_INDEX)
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert out.logits.shape == (*ids.shape, llm.llm.config.vocab_size)


def greedy(llm: Any, prompts: list[str], **kwargs: Any) -> torch.Tensor:
    ids, mask = llm.encode_prompts(prompts)
    kwargs = {"max_new_tokens": 6, "do_sample": False, **kwargs}
    return llm.generate(inputs_embeds=llm.embed_input_ids(ids), attention_mask=mask, **kwargs)


def test_generate_returns_only_new_tokens_and_is_cached(llm: Any) -> None:
    new = greedy(llm, PROMPTS[:1])
    assert new.shape == (1, 6)
    assert torch.equal(new, greedy(llm, PROMPTS[:1], use_cache=False))


def test_batched_left_padded_greedy_equals_row_by_row(llm: Any) -> None:
    _ids, mask = llm.encode_prompts(PROMPTS)
    assert not mask[:, 0].all() and mask[:, -1].all(), "prompts of different lengths are left-padded"
    assert llm.tokenizer.padding_side == "right", "left padding is only a view"
    batched = greedy(llm, PROMPTS)
    for row, prompt in enumerate(PROMPTS):
        single = greedy(llm, [prompt])
        assert torch.equal(batched[row, : single.shape[1]], single[0])


def test_right_padded_batches_are_refused(llm: Any) -> None:
    ids = llm.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="left-padded"):
        llm.generate(inputs_embeds=llm.embed_input_ids(ids.input_ids), attention_mask=ids.attention_mask,
                     max_new_tokens=2)


def test_rows_stop_at_eos_and_are_padded_after_it(llm: Any) -> None:
    from transformers import LogitsProcessor, LogitsProcessorList

    eos = llm.tokenizer.eos_token_id

    class EosOnRowZeroAtStep2(LogitsProcessor):
        def __init__(self, start: int) -> None:
            self.start = start

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if input_ids.shape[1] - self.start == 1:
                scores[0] = -float("inf")
                scores[0, eos] = 0.0
            return scores

    ids, mask = llm.encode_prompts(PROMPTS[:2])
    # With inputs_embeds only, generation's running input_ids start empty.
    new = llm.generate(inputs_embeds=llm.embed_input_ids(ids), attention_mask=mask, max_new_tokens=5,
                       do_sample=False, logits_processor=LogitsProcessorList([EosOnRowZeroAtStep2(0)]))
    assert new[0, 1].item() == eos
    assert (new[0, 2:] == llm.tokenizer.pad_token_id).all()
    assert new.shape[1] == 5 and (new[1] != llm.tokenizer.pad_token_id).all()


def test_sampling_follows_the_torch_seed(llm: Any) -> None:
    def sample() -> torch.Tensor:
        torch.manual_seed(3)
        return greedy(llm, PROMPTS, do_sample=True, temperature=1.5, top_k=0)

    assert torch.equal(sample(), sample())
    assert not torch.equal(sample(), greedy(llm, PROMPTS))


def test_set_trainable_and_decoder_layers(llm: Any) -> None:
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    assert llm.decoder_layer_classes == (LlamaDecoderLayer,)
    llm.set_trainable(False)
    assert not any(p.requires_grad for p in llm.parameters()) and not llm.training
    llm.set_trainable(True)
    assert all(p.requires_grad for p in llm.parameters())
    llm.eval()


def test_forward_continues_from_its_own_past_key_values(llm: Any) -> None:
    ids = torch.tensor([llm.tokenizer("In: What colour is the star?").input_ids])
    embeds, mask = llm.embed_input_ids(ids), torch.ones_like(ids)
    with torch.no_grad():
        full = llm(inputs_embeds=embeds, attention_mask=mask)
        head = llm(inputs_embeds=embeds[:, :-2], attention_mask=mask[:, :-2], use_cache=True)
        tail = llm(inputs_embeds=embeds[:, -2:], attention_mask=mask, past_key_values=head.past_key_values,
                   use_cache=True)
    assert torch.allclose(tail.logits, full.logits[:, -2:], atol=1e-5)
