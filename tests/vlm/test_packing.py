"""Packed batches through the composed model: the same loss and gradients as unpacked, no attention or label across
examples, the chunked loss equal to the full-logits one, and backbones that cannot isolate examples refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_core import vlm as vlm_module
from prism_core.data.collate import Collator
from prism_core.data.packing import example_ids_of
from prism_core.types import Example
from prism_core.vlm import PackingNotSupportedError, packed_position_ids

from .helpers import example, image

ROWS = [
    ("What colour is the shape?", "red", 0),
    ("Describe the picture in detail please.", "a green square on white", None),
    ("How many?", "two", 2),
    ("Is it round?", "no, it has four corners", None),
    ("Which colour is on the left?", "blue", 1),
    ("Say it again.", "a green square", None),
]


def examples(model, rows=ROWS) -> list[Example]:
    out = []
    for i, (question, answer, img) in enumerate(rows):
        ids, labels = example(model, question, answer)
        pixels = None if img is None else model.image_transform(image(img))
        out.append(Example(torch.tensor(ids), torch.tensor(labels), pixels, f"test.json#{i}"))
    return out


def loss_and_grads(model, batch, logits=True):
    model.zero_grad(set_to_none=True)
    out = model.forward_batch(batch, logits=logits)
    out.loss_sum.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(got, expected, rel):
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        error = (got[name] - grad).norm() / grad.norm().clamp_min(1e-12)
        assert error <= rel, f"{name}: relative gradient error {error:.2e}"


@pytest.mark.parametrize("which", ["vlm", "fused_vlm"])
def test_packed_and_unpacked_batches_give_the_same_loss_and_gradients(which, request):
    model = request.getfixturevalue(which)
    model.configure_trainable("full-finetune")
    items = examples(model)
    pad, n = model.tokenizer.pad_token_id, model.num_image_tokens
    unpacked = Collator(pad, 256, image_tokens=n)(items)
    packed = Collator(pad, 2 * n + 60, image_tokens=n, packing=True)(items)
    assert packed.input_ids.shape[0] < len(items) and int(packed.example_ids.amax(1).max()) > 1  # really packed
    assert packed.num_examples == unpacked.num_examples == len(items)
    reference, expected = loss_and_grads(model, unpacked)
    out, got = loss_and_grads(model, packed)
    assert int(out.num_tokens) == int(reference.num_tokens)
    torch.testing.assert_close(out.loss, reference.loss, rtol=1e-5, atol=1e-5)
    assert_grads_close(got, expected, rel=1e-5)
    chunked, chunked_grads = loss_and_grads(model, packed, logits=False)
    assert chunked.logits is None
    torch.testing.assert_close(chunked.loss, reference.loss, rtol=1e-5, atol=1e-5)
    assert_grads_close(chunked_grads, expected, rel=1e-5)


@pytest.mark.parametrize("packing", [False, True])
def test_chunked_loss_equals_the_full_logits_loss_and_gradients(vlm, monkeypatch, packing):
    vlm.configure_trainable("full-finetune")
    items = examples(vlm)
    n = vlm.num_image_tokens
    batch = Collator(vlm.tokenizer.pad_token_id, 2 * n + 60, image_tokens=n, packing=packing)(items)
    full, expected = loss_and_grads(vlm, batch)
    assert full.logits is not None
    monkeypatch.setattr(vlm_module, "LOSS_CHUNK_ELEMENTS", 7 * 260)  # 7 positions per chunk: many chunks
    chunked, got = loss_and_grads(vlm, batch, logits=False)
    assert chunked.logits is None and int(chunked.num_tokens) == int(full.num_tokens)
    torch.testing.assert_close(chunked.loss_sum, full.loss_sum, rtol=1e-6, atol=1e-6)
    assert_grads_close(got, expected, rel=1e-6)


def test_the_chunked_loss_projects_supervised_positions_only(vlm):
    batch = Collator(vlm.tokenizer.pad_token_id, 256, image_tokens=vlm.num_image_tokens)(examples(vlm))
    projected = []
    vlm.llm_backbone.output_head.register_forward_hook(lambda _m, args, _o: projected.append(args[0].shape[0]))
    out = vlm.forward_batch(batch, logits=False)
    assert sum(projected) == int(out.num_tokens) < int(batch.attention_mask.sum())


@st.composite
def packed_rows(draw):
    """1-3 rows of 1-4 examples of 1-12 positions, then padding."""
    rows = draw(st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=4), min_size=1, max_size=3))
    width = max(sum(r) for r in rows) + draw(st.integers(0, 3))
    return example_ids_of(rows, width)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(example_ids=packed_rows(), seed=st.integers(0, 2**16))
def test_no_position_attends_across_an_example_boundary(vlm, attention, example_ids, seed):
    llm = vlm.llm_backbone
    llm.llm.set_attn_implementation(attention)
    torch.manual_seed(seed)
    embeds = torch.randn(*example_ids.shape, llm.embed_dim, requires_grad=True)
    hidden = llm(inputs_embeds=embeds, attention_mask=example_ids > 0, example_ids=example_ids,
                 position_ids=packed_position_ids(example_ids), logits=False).last_hidden_state
    positions = torch.arange(example_ids.shape[1])
    for r in range(example_ids.shape[0]):
        for k in example_ids[r].unique().tolist():
            inside = example_ids[r] == k
            (grad,) = torch.autograd.grad(hidden[r, inside].sum(), embeds, retain_graph=True)
            reached = grad.abs().sum(-1) > 0
            assert not reached[r, ~inside].any(), f"row {r}: example {k} sees another example"
            assert not reached[torch.arange(len(reached)) != r].any(), "rows see each other"
            first = int(positions[inside][0])  # and causal inside: the first position sees only itself
            (grad,) = torch.autograd.grad(hidden[r, first].sum(), embeds, retain_graph=True)
            assert (grad.abs().sum(-1) > 0).nonzero().tolist() == [[r, first]]


def test_position_ids_restart_at_every_example_and_at_the_padding():
    ids = torch.tensor([[1, 1, 1, 2, 2, 0, 0], [1, 2, 3, 3, 3, 3, 3]])
    assert packed_position_ids(ids).tolist() == [[0, 1, 2, 0, 1, 0, 1], [0, 0, 0, 1, 2, 3, 4]]


def test_an_llm_that_cannot_isolate_examples_is_refused(vlm, monkeypatch):
    batch = Collator(vlm.tokenizer.pad_token_id, 256, image_tokens=vlm.num_image_tokens, packing=True)(examples(vlm))
    monkeypatch.setattr(type(vlm.llm_backbone), "supports_packing", False)
    with pytest.raises(PackingNotSupportedError, match="cannot keep packed examples apart"):
        vlm.forward_batch(batch)


def test_image_slots_that_do_not_fit_the_row_are_an_error(vlm):
    batch = Collator(vlm.tokenizer.pad_token_id, 256, image_tokens=vlm.num_image_tokens, packing=True)(examples(vlm))
    batch.image_positions = batch.image_positions + batch.input_ids.shape[1]
    with pytest.raises(ValueError, match="slots run past the row"):
        vlm.forward_batch(batch)
