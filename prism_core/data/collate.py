"""Padding collator and data loader for any ``Dataset``.

The collator right-pads, builds the attention mask, stacks pixels for the image rows only, and truncates each row
to its text budget: ``max_length`` for text-only rows and ``max_length - image_tokens`` for image rows, because the
VLM splices ``image_tokens`` embeddings after BOS (``PrismVLM.num_image_tokens``: the projector's count, which is
the patch count unless it shuffles, pools or resamples). Truncating the text never cuts image positions. A row left
without a supervised token is an error naming its source, or counted and replaced under ``on_bad_example="skip"``
(the loader reads through ``ReplacingDataset``, so every micro-batch stays full and every rank keeps its step count).
With ``packing`` the kept examples are laid into rows of up to ``max_length`` positions instead, several per row
(``prism_core.data.packing``); truncation and the bad-example rules are the same.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from prism_core.data import BadExample, BadExampleError, OnBadExample, check_on_bad_example
from prism_core.data.packing import pack_examples
from prism_core.data.sampler import ModalityLengthSampler
from prism_core.types import IGNORE_INDEX, Batch, Example


class Collator:
    """``collator(examples) -> Batch``. ``examples`` may contain ``BadExample`` stand-ins from a skipping dataset."""

    def __init__(
        self,
        pad_token_id: int,
        max_length: int,
        *,
        image_tokens: int = 0,
        on_bad_example: OnBadExample = "error",
        packing: bool = False,
    ) -> None:
        if max_length <= image_tokens:
            raise ValueError(
                f"max_length ({max_length}) leaves no room for text after the {image_tokens} image tokens"
            )
        self.pad_token_id = int(pad_token_id)
        self.max_length = max_length
        self.image_tokens = image_tokens
        self.on_bad_example = check_on_bad_example(on_bad_example)
        self.packing = packing
        self.skipped: list[BadExample] = []  # what __call__ dropped, in this process (see ``collate`` for workers)

    def __call__(self, examples: Sequence[Example | BadExample]) -> Batch:
        batch, skipped = self.collate(examples)
        self.skipped += skipped
        if batch is None:
            raise BadExampleError(f"every example of the batch was skipped: {'; '.join(map(str, skipped))}")
        return batch

    def _truncate(self, example: Example) -> tuple[torch.Tensor, torch.Tensor]:
        if example.input_ids.shape != example.labels.shape or example.input_ids.dim() != 1:
            raise BadExampleError(
                f"{example.source}: input_ids {tuple(example.input_ids.shape)} and labels "
                f"{tuple(example.labels.shape)} must be equal 1-D shapes"
            )
        budget = self.max_length - (self.image_tokens if example.has_image else 0)
        return example.input_ids[:budget], example.labels[:budget]

    def problem(self, example: Example) -> BadExample | None:
        """Why ``example`` cannot be trained on after truncation (no supervised token left), or ``None``."""
        ids, labels = self._truncate(example)
        if bool((labels != IGNORE_INDEX).any()):
            return None
        before = int((example.labels != IGNORE_INDEX).sum())
        image = f", {self.image_tokens} image tokens" if example.has_image else ""
        return BadExample(example.source, f"no supervised token left after truncation to {len(ids)} tokens "
                                          f"({before} before; max_length={self.max_length}{image})", "too-long")

    def collate(self, examples: Sequence[Example | BadExample]) -> tuple[Batch | None, list[BadExample]]:
        """The batch (``None`` if every example was skipped) and the ``BadExample`` for each skipped one."""
        kept: list[Example] = []
        skipped: list[BadExample] = []
        for example in examples:
            bad = example if isinstance(example, BadExample) else self.problem(example)
            if bad is None:
                kept.append(example)  # type: ignore[arg-type]
            elif self.on_bad_example == "error":
                raise BadExampleError(str(bad))
            else:
                skipped.append(bad)
        if not kept:
            return None, skipped
        rows = [(example, *self._truncate(example)) for example in kept]
        if self.packing:
            return pack_examples(rows, max_length=self.max_length, image_tokens=self.image_tokens,
                                 pad_token_id=self.pad_token_id, stack_pixels=_stack_pixels), skipped
        width = max(len(ids) for _, ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for row, (_, ids, lab) in enumerate(rows):
            # The mask comes from lengths, not `ids != pad`: many tokenizers reuse EOS as the pad token.
            input_ids[row, : len(ids)] = ids
            labels[row, : len(lab)] = lab
            attention_mask[row, : len(ids)] = True
        image_rows = [row for row, example in enumerate(kept) if example.has_image]
        return (
            Batch(
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=labels,
                multimodal_indices=torch.tensor(image_rows, dtype=torch.long),
                pixel_values=_stack_pixels([kept[r] for r in image_rows]),
                sources=tuple(example.source for example in kept),
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


@dataclass(frozen=True)
class Fetched:
    """What a loader worker hands back for one sampled index: the example to train on (the sampled one or its
    replacement), the bad examples met on the way, or the message of a bad example under ``"error"``."""

    example: Example | None
    skipped: tuple[BadExample, ...] = ()
    error: str | None = None


class ReplacingDataset:
    """What the DataLoader reads: ``dataset[i]``, checked by the collator as it will be batched.

    Under ``on_bad_example = "skip"`` a bad example is counted and replaced by another example of the same modality,
    drawn with a generator seeded by ``(seed, index, attempt)``. So every micro-batch keeps its size, every rank its
    number of micro-batches (under DDP / FSDP each one is a collective), the step count stays what the sampler
    promised, and a resumed run draws the same replacements. Under ``"error"`` the problem comes back as a message
    (raised in the main process as ``BadExampleError``, not wrapped in a worker traceback).
    """

    MAX_ATTEMPTS = 64

    def __init__(self, dataset: Any, collator: Collator, has_image: Sequence[bool], seed: int = 0) -> None:
        self.dataset = dataset
        self.collator = collator
        self.seed = seed
        self.has_image = bytes(bool(h) for h in has_image)
        # Compact per-modality index lists: the workers get a copy of this object.
        self._by_modality = {flag: array("q", (i for i, h in enumerate(self.has_image) if h == flag))
                             for flag in (0, 1)}

    def __len__(self) -> int:
        return len(self.dataset)

    def _replacement(self, index: int, attempt: int) -> int:
        pool = self._by_modality[self.has_image[index]]
        return pool[random.Random(f"prism-replace:{self.seed}:{index}:{attempt}").randrange(len(pool))]

    def __getitem__(self, index: int) -> Fetched:
        skipped: list[BadExample] = []
        candidate = index
        for attempt in range(self.MAX_ATTEMPTS):
            try:
                example = self.dataset[candidate]
                bad = example if isinstance(example, BadExample) else self.collator.problem(example)
            except BadExampleError as exc:  # the dataset's own policy is "error"
                return Fetched(None, tuple(skipped), str(exc))
            if bad is None:
                return Fetched(example, tuple(skipped))
            if self.collator.on_bad_example == "error":
                return Fetched(None, tuple(skipped), str(bad))
            skipped.append(bad)
            candidate = self._replacement(index, attempt)
        return Fetched(None, tuple(skipped), (
            f"{skipped[0].source}: no usable replacement among {self.MAX_ATTEMPTS} other examples of the same "
            f"modality (the last: {skipped[-1]}); most of the data seems unusable: run `prism data check SPEC`"))


class _CollateFetched:
    """The DataLoader's ``collate_fn`` (picklable, runs in workers): ``(batch, skipped, error)``."""

    def __init__(self, collator: Collator) -> None:
        self.collator = collator

    def __call__(self, items: Sequence[Fetched]) -> tuple[Batch | None, list[BadExample], str | None]:
        skipped = [bad for item in items for bad in item.skipped]
        error = next((item.error for item in items if item.error is not None), None)
        if error is not None:
            return None, skipped, error
        batch, dropped = self.collator.collate([item.example for item in items])  # type: ignore[misc]
        return batch, skipped + dropped, None


class PrismDataLoader:
    """Iterates ``Batch`` objects for one rank, each micro-batch full (see ``ReplacingDataset``).

    The bad examples met are kept until the training loop takes them (``take_skipped``), so they are counted with
    the step that used their batch. ``state_dict()`` records how many micro-batches the loop has taken this epoch, so
    resuming yields exactly the rest (the wrapped DataLoader prefetches, so the sampler's own count runs ahead).
    """

    def __init__(self, loader: DataLoader, sampler: ModalityLengthSampler, per_device_batch_size: int) -> None:
        self.loader = loader
        self.sampler = sampler
        self.per_device_batch_size = per_device_batch_size
        self._pending: list[BadExample] = []  # skipped examples behind the batches handed out, not yet taken
        self._taken = 0  # sampler indices behind the batches handed out this epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        """Micro-batches per epoch for this rank."""
        return len(self.sampler) // self.per_device_batch_size

    def __iter__(self) -> Iterator[Batch]:
        self._taken = len(self.sampler) - self.sampler.remaining
        for batch, skipped, error in self.loader:
            if error is not None:
                raise BadExampleError(error)
            if batch is None:  # only an empty index list gets here: the replacement keeps batches full
                raise BadExampleError(f"every example of a batch was skipped: {'; '.join(map(str, skipped))}")
            self._taken += self.per_device_batch_size
            self._pending += skipped
            yield batch

    def take_skipped(self) -> list[BadExample]:
        """The bad examples met (and replaced) since the last call."""
        taken, self._pending = self._pending, []
        return taken

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(consumed=self._taken)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])


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
    """A loader yielding full, right-padded ``Batch`` objects in the sampler's order (one rank's share); bad examples
    are replaced and reported under ``on_bad_example = "skip"`` (``ReplacingDataset``)."""
    if sampler.per_device_batch_size != per_device_batch_size:
        raise ValueError(f"per_device_batch_size ({per_device_batch_size}) differs from the sampler's "
                         f"({sampler.per_device_batch_size})")
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        ReplacingDataset(dataset, collator, sampler.has_image, seed=sampler.seed),
        batch_size=per_device_batch_size,
        sampler=sampler,
        collate_fn=_CollateFetched(collator),
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if num_workers else None,
        generator=generator,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers else None,
        drop_last=False,
    )
    return PrismDataLoader(loader, sampler, per_device_batch_size)
