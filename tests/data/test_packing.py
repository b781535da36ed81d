"""Packing on the data side: the row plan, the packed layout, the packing sampler's deal and resume, and bad-example
replacement with packing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prism_core.data import BadExample
from prism_core.data.collate import Collator, build_dataloader
from prism_core.data.packing import first_fit_decreasing, plan_rows
from prism_core.data.sampler import ModalityLengthSampler
from prism_core.types import IGNORE_INDEX, Example
from tests.data.test_collate import ListDataset

PAD, BOS = 0, 1


def example(n: int, answer: int, image: bool, source: str) -> Example:
    """BOS, then ``n - 1`` prompt/answer tokens (ids 2..), the last ``answer`` of them supervised (never BOS)."""
    ids = torch.cat([torch.tensor([BOS]), torch.arange(2, n + 1)])
    labels = torch.where(torch.arange(n) >= max(1, n - answer), ids, torch.full_like(ids, IGNORE_INDEX))
    return Example(ids, labels, torch.full((3, 2, 2), float(len(source))) if image else None, source)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=40), st.integers(64, 200))
def test_rows_hold_every_example_once_within_capacity_and_cost_no_more_than_first_fit_decreasing(lengths, capacity):
    rows = plan_rows(lengths, capacity)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= capacity for row in rows)
    ffd = first_fit_decreasing(lengths, capacity)

    def cost(plan):
        return len(plan) * max(sum(lengths[i] for i in row) for row in plan)

    assert cost(rows) <= cost(ffd)
    assert plan_rows(lengths, capacity) == rows  # deterministic


def test_the_plan_is_a_narrow_rectangle_and_an_oversized_example_is_refused():
    assert plan_rows([50, 50, 50, 50], 200) == [[0, 1, 2, 3]]
    assert sorted(map(sorted, plan_rows([60, 40, 60, 40], 200))) == [[0, 1, 2, 3]]
    # FFD at 100 would need 3 rows of 100 for [70, 30, 30, 30, 30, 10]; two rows of 100 fit exactly.
    rows = plan_rows([70, 30, 30, 30, 30, 10], 100)
    assert len(rows) == 2 and max(sum([70, 30, 30, 30, 30, 10][i] for i in r) for r in rows) == 100
    with pytest.raises(ValueError, match="does not fit a row of 10"):
        plan_rows([11], 10)


@st.composite
def micro_batches(draw):
    image_tokens = draw(st.integers(0, 6))
    max_length = draw(st.integers(image_tokens + 4, 48))
    rows = draw(st.lists(st.tuples(st.integers(2, 60), st.integers(1, 5), st.booleans()), min_size=1, max_size=12))
    items = [example(n, answer, image, f"d.json#{i}") for i, (n, answer, image) in enumerate(rows)]
    return items, max_length, image_tokens


@settings(max_examples=150, deadline=None)
@given(micro_batches())
def test_packed_layout_keeps_each_example_whole_after_its_bos_with_its_image_slots(case):
    items, max_length, n = case
    plain = Collator(PAD, max_length, image_tokens=n, on_bad_example="skip")
    packed = Collator(PAD, max_length, image_tokens=n, on_bad_example="skip", packing=True)
    reference, skipped = plain.collate(items)
    batch, skipped_packed = packed.collate(items)
    assert skipped == skipped_packed
    if reference is None:
        assert batch is None
        return
    assert batch.input_ids.shape[1] <= max_length and batch.num_examples == reference.num_examples
    assert set(batch.sources) == set(reference.sources)
    by_source = {e.source: e for e in items}
    image = 0
    for r in range(batch.input_ids.shape[0]):
        ids = batch.example_ids[r]
        assert ids.tolist() == sorted(ids[ids > 0].tolist()) + [0] * int((ids == 0).sum())  # padding only at the end
        assert torch.equal(batch.attention_mask[r], ids > 0)
        for k in range(1, int(ids.max()) + 1):
            source = batch.sources[sum(int(batch.example_ids[q].max()) for q in range(r)) + k - 1]
            row = reference.sources.index(source)
            span = (ids == k).nonzero().flatten()
            start = int(span[0])
            want_ids = reference.input_ids[row][reference.attention_mask[row]]
            want_labels = reference.labels[row][reference.attention_mask[row]]
            slots = n if by_source[source].has_image else 0
            got_ids = batch.input_ids[r, span]
            got_labels = batch.labels[r, span]
            assert got_ids[0] == BOS and got_labels[0] == IGNORE_INDEX
            assert torch.equal(got_ids[1 + slots :], want_ids[1:]) and torch.equal(got_labels[1 + slots :],
                                                                                  want_labels[1:])
            assert (got_labels[1 : 1 + slots] == IGNORE_INDEX).all()  # image slots: never supervised
            if by_source[source].has_image:  # images are listed row by row, left to right, their pixels in that order
                assert (int(batch.multimodal_indices[image]), int(batch.image_positions[image])) == (r, start + 1)
                assert torch.equal(batch.pixel_values[image], by_source[source].pixel_values)
                image += 1
    assert image == len(batch.multimodal_indices) == len(reference.multimodal_indices)
    # Every supervised token appears exactly once: the packed batch supervises what the padded one does.
    assert int((batch.labels != IGNORE_INDEX).sum()) == int((reference.labels != IGNORE_INDEX).sum())


def lengths(count: int = 96, seed: int = 0) -> list[tuple[bool, int]]:
    import random

    rng = random.Random(seed)
    return [(rng.random() < 0.7, int(rng.lognormvariate(4, 0.8)) + 1) for _ in range(count)]


@pytest.mark.parametrize(("world_size", "per_device", "accumulation"), [(1, 4, 3), (2, 4, 2), (4, 2, 1)])
def test_packing_deal_trains_on_the_same_global_batches_with_balanced_micro_batches(world_size, per_device,
                                                                                   accumulation):
    data = lengths()
    setup = {"global_batch_size": world_size * per_device * accumulation, "per_device_batch_size": per_device,
             "world_size": world_size, "seed": 5, "image_tokens": 16}
    plain = [ModalityLengthSampler(data, rank=r, **setup) for r in range(world_size)]
    packed = [ModalityLengthSampler(data, rank=r, packing=True, **setup) for r in range(world_size)]
    share = setup["global_batch_size"] // world_size
    size = [n + (16 if image else 0) for image, n in data]
    streams = [s.epoch_indices() for s in packed]
    plain_streams = [s.epoch_indices() for s in plain]
    def step_examples(ranks, step):
        return sorted(i for stream in ranks for i in stream[step * share : (step + 1) * share])

    for step in range(len(streams[0]) // share):
        assert step_examples(streams, step) == step_examples(plain_streams, step)
        micro = [s[step * share + m * per_device : step * share + (m + 1) * per_device]
                 for s in streams for m in range(accumulation)]
        totals = [sum(size[i] for i in batch) for batch in micro]
        assert max(totals) - min(totals) <= max(size[i] for batch in micro for i in batch)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**16), st.data())
def test_packing_sampler_resumes_mid_epoch_exactly(world_size, per_device, seed, data):
    setup = {"global_batch_size": 2 * world_size * per_device, "per_device_batch_size": per_device,
             "world_size": world_size, "rank": world_size - 1, "seed": seed, "packing": True}
    sampler = ModalityLengthSampler(lengths(40, seed), **setup)
    sampler.set_epoch(2)
    full = list(sampler)
    consumed = data.draw(st.integers(0, len(full)))
    state = sampler.state_dict(consumed=consumed)
    resumed = ModalityLengthSampler(lengths(40, seed), **setup)
    resumed.load_state_dict(state)
    assert list(resumed) == full[consumed:]
    with pytest.raises(ValueError, match="packing: saved True, now False"):
        ModalityLengthSampler(lengths(40, seed), **{**setup, "packing": False}).load_state_dict(state)
    older = {k: v for k, v in state.items() if k != "packing"}  # saved before packing existed: unpacked
    ModalityLengthSampler(lengths(40, seed), **{**setup, "packing": False}).load_state_dict(older)


def test_bad_examples_are_replaced_in_packed_batches_and_the_loader_resumes_by_batches():
    items = [example(4 + i % 5, 2, i % 2 == 0, f"d#{i}") for i in range(16)]
    items[6] = BadExample("d#6", "missing image file", "bad-image")
    items[9] = example(30, 2, False, "d#9")  # only its prompt survives truncation to 20
    ds = ListDataset(items, length=8)

    def loader():
        sampler = ModalityLengthSampler(ds.modality_lengths(), global_batch_size=4, per_device_batch_size=2, seed=3,
                                        packing=True)
        return build_dataloader(ds, collator=Collator(PAD, 20, image_tokens=4, on_bad_example="skip", packing=True),
                                sampler=sampler, per_device_batch_size=2)

    first = loader()
    batches = list(first)
    assert len(batches) == len(first) and all(b.num_examples == 2 for b in batches)  # every micro-batch full
    assert any(b.input_ids.shape[0] == 1 for b in batches)  # and two examples share a row
    assert sorted(bad.source for bad in first.take_skipped()) == ["d#6", "d#9"]
    sources = [s for b in batches for s in b.sources]
    assert "d#6" not in sources and "d#9" not in sources and len(sources) == 2 * len(first)

    it = iter(first)
    taken = [next(it) for _ in range(3)]
    state = first.state_dict()
    second = loader()
    second.load_state_dict(state)
    assert [s for b in taken for s in b.sources] + [s for b in second for s in b.sources] == sources
