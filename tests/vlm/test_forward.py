"""The composed forward pass: splice layout, mixed batches, loss accounting, freezing per stage."""

from __future__ import annotations

import pytest
import torch

from prism_core.types import IGNORE_INDEX, Batch
from prism_core.vlm import NoSupervisedTokensError

from .helpers import ROWS, make_batch


def _row(batch: Batch, i: int) -> Batch:
    """Row ``i`` of a batch as its own batch (trailing padding removed)."""
    length = int(batch.attention_mask[i].sum())
    has_image = bool((batch.multimodal_indices == i).any())
    pixels = None
    if has_image:
        m = int((batch.multimodal_indices == i).nonzero()[0, 0])
        pv = batch.pixel_values
        pixels = {k: v[m : m + 1] for k, v in pv.items()} if isinstance(pv, dict) else pv[m : m + 1]
    return Batch(batch.input_ids[i : i + 1, :length], batch.attention_mask[i : i + 1, :length],
                 batch.labels[i : i + 1, :length], torch.tensor([0] if has_image else [], dtype=torch.long), pixels,
                 (batch.sources[i],))


@pytest.mark.parametrize("which", ["vlm", "fused_vlm"])
def test_mixed_batch_loss_equals_rows_computed_separately(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    batch = make_batch(model, ROWS)
    with torch.no_grad():
        together = model.forward_batch(batch)
        alone = [model.forward_batch(_row(batch, i)) for i in range(len(ROWS))]
    torch.testing.assert_close(together.loss_sum, sum(o.loss_sum for o in alone), rtol=1e-5, atol=1e-5)
    assert int(together.num_tokens) == sum(int(o.num_tokens) for o in alone)
    torch.testing.assert_close(together.loss, together.loss_sum / together.num_tokens)
    # Row by row, the logits at attended positions agree too.
    for i, out in enumerate(alone):
        kept = together.attention_mask[i]
        torch.testing.assert_close(together.logits[i][kept], out.logits[0], rtol=1e-4, atol=1e-4)


def test_patches_follow_bos_and_are_never_supervised(vlm) -> None:
    batch = make_batch(vlm, ROWS)
    n = vlm.num_image_tokens
    with torch.no_grad():
        out = vlm.forward_batch(batch)
    assert out.logits.shape[1] == batch.input_ids.shape[1] + n
    for i in (0, 2):  # image rows: BOS, n patches, then the text
        assert out.attention_mask[i, : n + 1].all()
        assert (out.labels[i, : n + 1] == IGNORE_INDEX).all()
        length = int(batch.attention_mask[i].sum())
        assert torch.equal(out.labels[i, n + 1 : n + length], batch.labels[i, 1:length])
    # The text-only row keeps its layout; the extra positions are masked padding at the end.
    length = int(batch.attention_mask[1].sum())
    assert torch.equal(out.labels[1, :length], batch.labels[1, :length])
    assert not out.attention_mask[1, length:].any() and (out.labels[1, length:] == IGNORE_INDEX).all()


def _count_vision_calls(model) -> list[int]:
    calls: list[int] = []
    model.vision_backbone.register_forward_hook(lambda _m, args, _o: calls.append(
        next(iter(args[0].values())).shape[0] if isinstance(args[0], dict) else args[0].shape[0]))
    return calls


def test_vision_runs_only_on_image_rows(vlm) -> None:
    calls = _count_vision_calls(vlm)
    with torch.no_grad():
        vlm.forward_batch(make_batch(vlm, ROWS))
        vlm.forward_batch(make_batch(vlm, [ROWS[1], ROWS[1]]))
    assert calls == [2]  # two image rows; the text-only batch never touched the vision tower


def test_keep_all_branches_runs_vision_and_projector_for_text_only_batches(vlm) -> None:
    vlm.configure_trainable("finetune")
    calls = _count_vision_calls(vlm)
    batch = make_batch(vlm, [ROWS[1]])
    reference = vlm.forward_batch(batch).loss.detach()
    vlm.keep_all_branches_in_graph = True
    vlm.zero_grad()
    out = vlm.forward_batch(batch)
    out.loss.backward()
    assert calls == [1]  # only the dummy image, under the switch
    torch.testing.assert_close(out.loss.detach(), reference)  # the dummy adds exactly nothing
    grads = [p.grad for p in vlm.projector.parameters()]
    assert all(g is not None and not g.any() for g in grads)  # in the graph (collectives match), zero gradient


def test_all_ignore_batch_is_an_error_naming_the_samples(vlm) -> None:
    batch = make_batch(vlm, ROWS[:2])
    batch.labels[:] = IGNORE_INDEX
    with pytest.raises(NoSupervisedTokensError, match=r"test\.json#0, test\.json#1"):
        vlm.forward_batch(batch)


def test_wrong_number_of_images_is_reported(vlm) -> None:
    batch = make_batch(vlm, ROWS)
    with pytest.raises(ValueError, match="holds 2 images but multimodal_indices names 1"):
        vlm(batch.input_ids, batch.attention_mask, batch.labels, batch.pixel_values, batch.multimodal_indices[:1])


EXPECTED_TRAINABLE = {
    "align": {"projector"},
    "finetune": {"projector", "llm_backbone"},
    "full-finetune": {"projector", "llm_backbone", "vision_backbone"},
}


@pytest.mark.parametrize("stage", sorted(EXPECTED_TRAINABLE))
@pytest.mark.parametrize("which", ["vlm", "fused_vlm"])
def test_each_stage_trains_exactly_its_modules(stage: str, which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    model.configure_trainable(stage)
    seen_features: list[bool] = []
    model.vision_backbone.register_forward_hook(lambda _m, _a, out: seen_features.append(out.requires_grad))
    model.forward_batch(make_batch(model, ROWS)).loss.backward()
    for name, param in model.named_parameters():
        module = name.split(".")[0]
        if module in EXPECTED_TRAINABLE[stage]:
            assert param.requires_grad and param.grad is not None, name
        else:
            assert not param.requires_grad and param.grad is None, name
    # A frozen tower builds no autograd graph; a trained one does.
    assert seen_features == ["vision_backbone" in EXPECTED_TRAINABLE[stage]]
    assert model.vision_backbone.training == ("vision_backbone" in EXPECTED_TRAINABLE[stage])


def test_patterns_replace_the_stage_choice(vlm) -> None:
    trainable = vlm.configure_trainable("finetune", ["llm.*layers.1.*", "projector.projector.2.*"])
    assert trainable and all(n.startswith(("llm_backbone.llm.model.layers.1.", "projector.projector.2.")) for n in
                             trainable)
    assert any(n.startswith("projector.") for n in trainable)
    vlm.forward_batch(make_batch(vlm, ROWS)).loss.backward()
    assert vlm.projector.projector[0].weight.grad is None
    assert vlm.projector.projector[2].weight.grad is not None


def test_bad_stage_and_unmatched_pattern_are_errors(vlm) -> None:
    with pytest.raises(ValueError, match="unknown stage 'pretrain'"):
        vlm.configure_trainable("pretrain")
    with pytest.raises(ValueError, match=r"\['llm\.nothing\.\*'\] match no parameter"):
        vlm.configure_trainable("align", ["projector.*", "llm.nothing.*"])


def test_cached_decoding_matches_a_full_forward(vlm) -> None:
    batch = make_batch(vlm, [ROWS[0]])
    ids, mask = batch.input_ids, batch.attention_mask
    with torch.no_grad():
        full = vlm(ids, mask, pixel_values=batch.pixel_values, multimodal_indices=batch.multimodal_indices)
        prefix = vlm(ids[:, :-1], mask[:, :-1], pixel_values=batch.pixel_values,
                     multimodal_indices=batch.multimodal_indices, use_cache=True)
        step_mask = torch.ones(1, prefix.attention_mask.shape[1] + 1, dtype=torch.bool)
        step = vlm(ids[:, -1:], step_mask, past_key_values=prefix.past_key_values, use_cache=True)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], rtol=1e-4, atol=1e-4)
