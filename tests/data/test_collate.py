"""Collator: padding, masks, image-row stacking, truncation that respects image tokens, bad rows."""

from __future__ import annotations

import pytest
import torch

from prism_core.data import BadExample, BadExampleError
from prism_core.data.collate import Collator, build_dataloader
from prism_core.data.sampler import ModalityLengthSampler
from prism_core.types import IGNORE_INDEX, Example

PAD = 0


def example(n: int, supervised_from: int, image: bool, source: str, fused: bool = False) -> Example:
    ids = torch.arange(1, n + 1)
    labels = torch.where(torch.arange(n) >= supervised_from, ids, torch.full_like(ids, IGNORE_INDEX))
    pixels = None
    if image:
        pixels = {"a": torch.ones(3, 4, 4), "b": torch.zeros(3, 2, 2)} if fused else torch.full((3, 4, 4), float(n))
    return Example(ids, labels, pixels, source)


def test_pads_right_masks_by_length_and_stacks_image_rows_only():
    batch = Collator(pad_token_id=PAD, max_length=100)([
        example(3, 1, False, "t#0"), example(5, 2, True, "i#1"), example(4, 1, True, "i#2"),
    ])
    assert batch.input_ids.shape == (3, 5) and batch.labels.shape == (3, 5)
    assert batch.input_ids[0].tolist() == [1, 2, 3, PAD, PAD]
    assert batch.labels[0].tolist() == [IGNORE_INDEX, 2, 3, IGNORE_INDEX, IGNORE_INDEX]
    assert batch.attention_mask.sum(1).tolist() == [3, 5, 4]
    assert batch.multimodal_indices.tolist() == [1, 2]
    assert batch.pixel_values.shape == (2, 3, 4, 4)
    assert batch.pixel_values[:, 0, 0, 0].tolist() == [5.0, 4.0], "pixels follow multimodal_indices order"
    assert batch.sources == ("t#0", "i#1", "i#2")


def test_fused_pixels_are_stacked_per_member_and_text_only_batches_have_none():
    batch = Collator(PAD, 100)([example(3, 1, True, "a", fused=True), example(3, 1, True, "b", fused=True)])
    assert {k: tuple(v.shape) for k, v in batch.pixel_values.items()} == {"a": (2, 3, 4, 4), "b": (2, 3, 2, 2)}
    text = Collator(PAD, 100)([example(3, 1, False, "t")])
    assert text.pixel_values is None and text.multimodal_indices.tolist() == []


def test_image_rows_get_max_length_minus_image_tokens_of_text():
    collator = Collator(PAD, max_length=10, image_tokens=4)
    batch = collator([example(12, 1, True, "img"), example(12, 1, False, "txt")])
    assert batch.attention_mask.sum(1).tolist() == [6, 10]
    assert batch.input_ids.shape[1] + collator.image_tokens <= 14
    with pytest.raises(ValueError, match="no room"):
        Collator(PAD, max_length=4, image_tokens=4)


def test_example_left_without_supervision_is_an_error_naming_it_or_is_counted_when_skipping():
    rows = [example(12, 9, True, "chat.json#7"), example(4, 1, False, "chat.json#8")]
    with pytest.raises(BadExampleError, match=r"chat\.json#7: no supervised token left after truncation"):
        Collator(PAD, max_length=10, image_tokens=4)(rows)
    collator = Collator(PAD, max_length=10, image_tokens=4, on_bad_example="skip")
    batch = collator(rows)
    assert batch.sources == ("chat.json#8",)
    assert len(collator.skipped) == 1 and collator.skipped[0].source == "chat.json#7"
    assert collator.skipped[0].reason == "too-long"


def test_bad_example_stand_ins_raise_or_are_dropped():
    bad = BadExample("x.json#3", "corrupt image /x.png", "bad-image")
    with pytest.raises(BadExampleError, match=r"x\.json#3: corrupt image"):
        Collator(PAD, 10)([bad, example(3, 1, False, "ok")])
    batch, skipped = Collator(PAD, 10, on_bad_example="skip").collate([bad, example(3, 1, False, "ok")])
    assert batch.sources == ("ok",) and skipped == [bad]


class ListDataset:
    """Examples from a list; ``modality_lengths`` gives every one the same ``length`` (bad ones: text-only)."""

    def __init__(self, items, length=3):
        self.items, self.length = items, length

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def modality_lengths(self):
        return [(not isinstance(x, BadExample) and x.has_image, self.length) for x in self.items]


def test_loader_replaces_bad_examples_across_workers_and_resumes_by_batches():
    items = [example(3 + i % 3, 1, i % 2 == 0, f"d#{i}") for i in range(16)]
    items[5] = BadExample("d#5", "missing image file", "bad-image")
    ds = ListDataset(items)  # d#5 counts as text-only, as its index is odd
    sampler = ModalityLengthSampler(ds.modality_lengths(), global_batch_size=4, per_device_batch_size=2, seed=3)
    loader = build_dataloader(ds, collator=Collator(PAD, 32, on_bad_example="skip"), sampler=sampler,
                              per_device_batch_size=2, num_workers=2, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 8 and all(len(b.sources) == 2 for b in batches)  # every batch full
    assert loader.take_skipped() == [items[5]] and loader.take_skipped() == []
    rows = [s for b in batches for s in b.sources]
    assert "d#5" not in rows and len(rows) == 16
    assert all(len({items[int(s[2:])].has_image for s in b.sources}) == 1 for b in batches)
    assert [s for b in loader for s in b.sources] == rows  # the replacement is seeded: the same every pass

    it = iter(loader)
    taken = [next(it) for _ in range(3)]
    state = loader.state_dict()
    sampler2 = ModalityLengthSampler(ds.modality_lengths(), global_batch_size=4, per_device_batch_size=2, seed=3)
    loader2 = build_dataloader(ds, collator=Collator(PAD, 32, on_bad_example="skip"), sampler=sampler2,
                               per_device_batch_size=2, num_workers=0, seed=0)
    loader2.load_state_dict(state)
    rest = [s for b in loader2 for s in b.sources]
    assert [s for b in taken for s in b.sources] + rest == rows


def test_under_error_the_loader_raises_the_bad_example_without_a_worker_traceback():
    items = [example(3, 1, False, f"d#{i}") for i in range(8)]
    items[3] = BadExample("d#3", "corrupt image /x.png", "bad-image")
    sampler = ModalityLengthSampler([(False, 3)] * 8, global_batch_size=4, per_device_batch_size=2, seed=0)
    loader = build_dataloader(ListDataset(items), collator=Collator(PAD, 32), sampler=sampler,
                              per_device_batch_size=2, num_workers=1)
    with pytest.raises(BadExampleError) as raised:
        list(loader)
    assert str(raised.value) == "d#3: corrupt image /x.png"  # not "Caught ... in DataLoader worker process 0"


def test_a_modality_with_no_usable_example_is_an_error_not_an_endless_search():
    items = [BadExample(f"d#{i}", "missing image file", "bad-image") for i in range(4)]
    sampler = ModalityLengthSampler([(True, 3)] * 4, global_batch_size=2, per_device_batch_size=2, seed=0)
    loader = build_dataloader(ListDataset(items), collator=Collator(PAD, 32, on_bad_example="skip"),
                              sampler=sampler, per_device_batch_size=2)
    with pytest.raises(BadExampleError, match=r"no usable replacement among 64 other examples .*prism data check"):
        list(loader)
