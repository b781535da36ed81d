"""ModalityLengthSampler: modality-pure global batches, determinism, exact resume, rank balance."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism_core.data.sampler import ModalityLengthSampler


@st.composite
def setups(draw):
    world_size = draw(st.integers(1, 4))
    per_device = draw(st.integers(1, 4))
    accumulation = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.tuples(st.booleans(), st.integers(1, 500)), min_size=1, max_size=120))
    return {
        "modality_lengths": lengths,
        "global_batch_size": per_device * world_size * accumulation,
        "per_device_batch_size": per_device,
        "world_size": world_size,
        "seed": draw(st.integers(0, 2**31)),
        "group_by_length": draw(st.booleans()),
    }


def samplers(setup, **extra):
    return [ModalityLengthSampler(rank=r, **setup, **extra) for r in range(setup["world_size"])]


def global_batches(setup, ranks):
    """Reassemble global batches from the ranks' streams (each rank holds G / W of every global batch)."""
    share = setup["global_batch_size"] // setup["world_size"]
    streams = [list(s) for s in ranks]
    n = len(streams[0]) // share
    return [[i for stream in streams for i in stream[b * share : (b + 1) * share]] for b in range(n)]


@settings(max_examples=60, deadline=None)
@given(setups())
def test_every_global_batch_is_one_modality_and_covers_the_data(setup):
    ranks = samplers(setup)
    batches = global_batches(setup, ranks)
    has_image = [h for h, _ in setup["modality_lengths"]]
    assert all(len({has_image[i] for i in batch}) == 1 for batch in batches)
    assert all(len(batch) == setup["global_batch_size"] for batch in batches)
    seen = {i for batch in batches for i in batch}
    assert seen == set(range(len(has_image))), "without drop_last every example appears in the epoch"
    assert all(len(list(s)) == len(s) for s in ranks), "len() is exactly what iteration yields"


@settings(max_examples=40, deadline=None)
@given(setups(), st.integers(0, 5))
def test_same_seed_and_epoch_give_the_same_indices(setup, epoch):
    a, b = samplers(setup)[0], samplers(setup)[0]
    a.set_epoch(epoch)
    b.set_epoch(epoch)
    assert list(a) == list(b)


@settings(max_examples=60, deadline=None)
@given(setups(), st.data())
def test_resume_mid_epoch_yields_exactly_the_remaining_indices(setup, data):
    sampler = samplers(setup)[-1]
    sampler.set_epoch(3)
    full = list(sampler)
    consumed = data.draw(st.integers(0, len(full)))
    it = iter(sampler)
    for _ in range(consumed):
        next(it)
    state = sampler.state_dict()
    resumed = samplers(setup)[-1]
    resumed.load_state_dict(state)
    assert resumed.epoch == 3
    assert list(resumed) == full[consumed:]
    assert list(resumed) == full, "the resume point applies to one pass only"


@settings(max_examples=60, deadline=None)
@given(setups())
def test_ranks_get_balanced_lengths_in_each_micro_step(setup):
    if not setup["group_by_length"]:
        return
    ranks = samplers(setup)
    lengths = [n for _, n in setup["modality_lengths"]]
    p = setup["per_device_batch_size"]
    streams = [list(s) for s in ranks]
    for step in range(len(streams[0]) // p):
        totals = [sum(lengths[i] for i in s[step * p : (step + 1) * p]) for s in streams]
        longest = max(lengths[i] for s in streams for i in s[step * p : (step + 1) * p])
        assert max(totals) - min(totals) <= longest


def test_epochs_reshuffle_and_the_longest_batch_comes_first():
    lengths = [(i % 2 == 0, 10 + i) for i in range(64)]
    s = ModalityLengthSampler(lengths, global_batch_size=8, per_device_batch_size=4, world_size=2, rank=0, seed=1)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    everything = s.epoch_indices(0) + s.epoch_indices(1)
    assert 63 in s.epoch_indices(0)[:4] + s.epoch_indices(1)[:4], "longest example is in the first micro-step"
    assert len(set(everything)) == 64


def test_drop_last_drops_short_batches_and_bad_sizes_are_rejected():
    lengths = [(True, 5)] * 10 + [(False, 5)] * 3
    s = ModalityLengthSampler(lengths, global_batch_size=4, per_device_batch_size=2, drop_last=True)
    assert len(s) == 8 and len(list(s)) == 8
    with pytest.raises(ValueError, match="multiple of per_device_batch_size"):
        ModalityLengthSampler(lengths, global_batch_size=6, per_device_batch_size=4)
    with pytest.raises(ValueError, match="run changed"):
        ModalityLengthSampler(lengths[:5], global_batch_size=4, per_device_batch_size=2).load_state_dict(s.state_dict())
