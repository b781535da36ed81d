"""hf-causal-lm keeps packed examples apart (SDPA and eager, Mistral's sliding window, Phi's partial rotary), gives
flash attention the examples' boundaries, and offers its output head for the chunked loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prism_plugin_hf_llm.spec import HFCausalLMSpec

from prism_core.data.packing import example_ids_of
from prism_core.testing.toys import write_byte_tokenizer
from prism_core.vlm import packed_position_ids

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 96}
MODELS = {"mistral": {"sliding_window": 8}, "phi": {"partial_rotary_factor": 0.5, "num_key_value_heads": 4},
          "llama": {}}


def backbone(tmp_path: Path, model_type: str, attention: str):
    spec = HFCausalLMSpec(weights="random", tokenizer_id=str(write_byte_tokenizer(tmp_path)), model_type=model_type,
                          attn_implementation=attention, **{**TINY, **MODELS[model_type]})
    assert spec.supports_packing
    llm = spec.build()
    llm.eval()
    return llm


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_each_packed_example_gets_the_logits_it_gets_alone(tmp_path, model_type, attention):
    llm = backbone(tmp_path, model_type, attention)
    torch.manual_seed(0)
    lengths = [[13, 5, 9], [20, 7]]  # longer than Mistral's window of 8, so the window applies inside examples
    width = 29
    embeds = torch.randn(len(lengths), width, llm.embed_dim)
    example_ids = example_ids_of(lengths, width)
    with torch.no_grad():
        packed = llm(inputs_embeds=embeds, attention_mask=example_ids > 0, example_ids=example_ids,
                     position_ids=packed_position_ids(example_ids)).logits
        for r, row in enumerate(lengths):
            for k in range(1, len(row) + 1):
                span = example_ids[r] == k
                alone = llm(inputs_embeds=embeds[r : r + 1, span],
                            attention_mask=torch.ones(1, int(span.sum()), dtype=torch.bool)).logits[0]
                torch.testing.assert_close(packed[r, span], alone, rtol=1e-4, atol=1e-5)


def test_flash_attention_gets_the_boundaries_of_every_example_of_the_flattened_rows(tmp_path):
    llm = backbone(tmp_path, "llama", "sdpa")
    llm.llm.config._attn_implementation = "flash_attention_2"  # only the arguments are checked: no kernel runs
    example_ids = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1], [1, 2, 2, 2, 0, 0]])
    kwargs = llm._varlen_kwargs(example_ids)
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 12, 13, 16, 18]
    assert kwargs["cu_seq_lens_q"].dtype == torch.int32 and kwargs["cu_seq_lens_k"] is kwargs["cu_seq_lens_q"]
    assert kwargs["max_length_q"] == kwargs["max_length_k"] == 6
    llm.llm.config._attn_implementation = "sdpa"
    assert llm._varlen_kwargs(example_ids) == {}


def test_the_output_head_maps_hidden_states_to_the_logits(tmp_path):
    llm = backbone(tmp_path, "phi", "sdpa")
    embeds = torch.randn(2, 7, llm.embed_dim)
    mask = torch.ones(2, 7, dtype=torch.bool)
    with torch.no_grad():
        hidden = llm(inputs_embeds=embeds, attention_mask=mask, logits=False).last_hidden_state
        torch.testing.assert_close(llm.output_head(hidden), llm(inputs_embeds=embeds, attention_mask=mask).logits)
    llm.llm.config.final_logit_softcapping = 30.0  # logits that are more than lm_head(hidden): no chunked loss
    assert llm.output_head is None
