"""Padding collator and data loader for any ``Dataset``.

The collator right-pads, builds the attention mask, stacks pixels for the image rows only, and truncates each row
to its text budget: ``max_length`` for text-only rows and ``max_length - num_patches`` for image rows, because the
VLM splices ``num_patches`` image embeddings after BOS. Truncating the text never cuts image positions. A row left
without a supervised token is an error naming its source, or counted and skipped under ``on_bad_example="skip"``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from prism_core.data import BadExample, BadExampleError, OnBadExample, check_on_bad_example
from prism_core.data.sampler import ModalityLengthSampler
from prism_core.types import IGNORE_INDEX, Batch, Example

log = logging.getLogger(__name__)


class Collator:
    """``collator(examples) -> Batch``. ``examples`` may contain ``BadExample`` stand-ins from a skipping dataset."""

    def __init__(
        self,
        pad_token_id: int,
        max_length: int,
        *,
        num_patches: int = 0,
        on_bad_example: OnBadExample = "error",
    ) -> None:
        if max_length <= num_patches:
            raise ValueError(
                f"max_length ({max_length}) leaves no room for text after the {num_patches} image patches"
            )
        self.pad_token_id = int(pad_token_id)
        self.max_length = max_length
        self.num_patches = num_patches
        self.on_bad_example = check_on_bad_example(on_bad_example)
        self.skipped: list[str] = []  # what __call__ dropped, in this process (see ``collate`` for workers)

    def __call__(self, examples: Sequence[Example | BadExample]) -> Batch:
        batch, skipped = self.collate(examples)
        self.skipped += skipped
        if batch is None:
            raise BadExampleError(f"every example of the batch was skipped: {'; '.join(skipped)}")
        return batch

    def _truncate(self, example: Example) -> tuple[torch.Tensor, torch.Tensor]:
        if example.input_ids.shape != example.labels.shape or example.input_ids.dim() != 1:
            raise BadExampleError(
                f"{example.source}: input_ids {tuple(example.input_ids.shape)} and labels "
                f"{tuple(example.labels.shape)} must be equal 1-D shapes"
            )
        budget = self.max_length - (self.num_patches if example.has_image else 0)
        return example.input_ids[:budget], example.labels[:budget]

    def collate(self, examples: Sequence[Example | BadExample]) -> tuple[Batch | None, list[str]]:
        """The batch (``None`` if every example was skipped) and ``"source: reason"`` for each skipped one."""
        kept: list[tuple[Example, torch.Tensor, torch.Tensor]] = []
        skipped: list[str] = []
        for example in examples:
            if isinstance(example, BadExample):
                if self.on_bad_example == "error":
                    raise BadExampleError(str(example))
                skipped.append(str(example))
                continue
            ids, labels = self._truncate(example)
            if not bool((labels != IGNORE_INDEX).any()):
                before = int((example.labels != IGNORE_INDEX).sum())
                reason = (f"{example.source}: no supervised token left after truncation to {len(ids)} tokens "
                          f"({before} before; max_length={self.max_length}"
                          f"{f', {self.num_patches} image patches' if example.has_image else ''})")
                if self.on_bad_example == "error":
                    raise BadExampleError(reason)
                skipped.append(reason)
                continue
            kept.append((example, ids, labels))
        if not kept:
            return None, skipped

        width = max(len(ids) for _, ids, _ in kept)
        input_ids = torch.full((len(kept), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(kept), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(kept), width), dtype=torch.bool)
        for row, (_, ids, lab) in enumerate(kept):
            # The mask comes from lengths, not `ids != pad`: many tokenizers reuse EOS as the pad token.
            input_ids[row, : len(ids)] = ids
            labels[row, : len(lab)] = lab
            attention_mask[row, : len(ids)] = True
        image_rows = [row for row, (ex, _, _) in enumerate(kept) if ex.has_image]
        return (
            Batch(
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=labels,
                multimodal_indices=torch.tensor(image_rows, dtype=torch.long),
                pixel_values=_stack_pixels([kept[r][0] for r in image_rows]),
                sources=tuple(ex.source for ex, _, _ in kept),
            ),
            skipped,
        )


def _stack_pixels(examples: list[Example]) -> Any:
    if not examples:
        return None
    first = examples[0].pixel_values
    try:
        if isinstance(first, dict):
            keys = set(first)
            for ex in examples:
                if not isinstance(ex.pixel_values, dict) or set(ex.pixel_values) != keys:
                    raise BadExampleError(f"{ex.source}: pixel_values keys differ from {examples[0].source}'s")
            return {k: torch.stack([ex.pixel_values[k] for ex in examples]) for k in first}
        return torch.stack([ex.pixel_values for ex in examples])
    except RuntimeError as exc:  # shape mismatch: name the rows
        shapes = ", ".join(f"{ex.source}: {_shape(ex.pixel_values)}" for ex in examples)
        raise BadExampleError(f"cannot stack pixel_values of different shapes ({shapes})") from exc


def _shape(pixels: Any) -> Any:
    if isinstance(pixels, dict):
        return {k: tuple(v.shape) for k, v in pixels.items()}
    return tuple(pixels.shape)


class PrismDataLoader:
    """Iterates ``Batch`` objects for one rank; counts and reports skipped examples at the end of each epoch.

    ``state_dict()`` records how many micro-batches the training loop has taken this epoch, so resuming yields
    exactly the rest (the wrapped DataLoader prefetches, so the sampler's own count would run ahead).
    """

    def __init__(self, loader: DataLoader, sampler: ModalityLengthSampler, per_device_batch_size: int) -> None:
        self.loader = loader
        self.sampler = sampler
        self.per_device_batch_size = per_device_batch_size
        self.skipped: list[str] = []  # this epoch's skipped examples, "source: reason"
        self.total_skipped = 0
        self._taken = 0  # sampler indices behind the batches handed out this epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        """Micro-batches per epoch for this rank."""
        return len(self.sampler) // self.per_device_batch_size

    def __iter__(self) -> Iterator[Batch]:
        self.skipped = []
        self._taken = len(self.sampler) - self.sampler.remaining
        for batch, skipped in self.loader:
            self._taken += self.per_device_batch_size
            if skipped:
                self.skipped += skipped
                self.total_skipped += len(skipped)
            if batch is not None:
                yield batch
        if self.skipped:
            log.warning("epoch %d: skipped %d bad example(s) (on_bad_example = \"skip\"): %s",
                        self.sampler.epoch, len(self.skipped), "; ".join(self.skipped[:10])
                        + (" ..." if len(self.skipped) > 10 else ""))

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(consumed=self._taken), "total_skipped": self.total_skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.total_skipped = int(state.get("total_skipped", 0))


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; carry that seed to Python's and NumPy's RNGs too so
    # random augmentations are reproducible.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def build_dataloader(
    dataset: Any,
    *,
    collator: Collator,
    sampler: ModalityLengthSampler,
    per_device_batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
) -> PrismDataLoader:
    """A loader yielding right-padded ``Batch`` objects in the sampler's order (one rank's share)."""
    if sampler.per_device_batch_size != per_device_batch_size:
        raise ValueError(f"per_device_batch_size ({per_device_batch_size}) differs from the sampler's "
                         f"({sampler.per_device_batch_size})")
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=per_device_batch_size,
        sampler=sampler,
        collate_fn=collator.collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if num_workers else None,
        generator=generator,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers else None,
        drop_last=False,
    )
    return PrismDataLoader(loader, sampler, per_device_batch_size)
