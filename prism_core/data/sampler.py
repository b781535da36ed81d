"""A distributed sampler whose global batches are single-modality and length-grouped.

Why: a global batch mixing image and text-only rows makes some ranks run the vision backbone and others not, and
mixing short and long sequences wastes compute on padding. Following LLaVA / Prismatic's split-modality sampler:

1. split indices by modality and shuffle each with a generator seeded from ``(seed, epoch)``;
2. cut each modality into global batches (a short last one is dropped, or topped up with that modality's first
   indices, so every global batch is full and single-modality);
3. with ``group_by_length``: sort each global batch longest first, cut it into micro-steps of
   ``world_size × per_device_batch_size`` similar-length rows and deal each micro-step to the ranks so that their
   total lengths balance;
4. shuffle the order of global batches, then move the one with the longest row first so an out-of-memory error
   shows on the first step rather than hours in.

With ``packing`` (``[train] packing``: the collator packs each micro-batch's examples into rows, see
``prism_core.data.packing``) step 3 changes: grouping similar lengths would leave packed rows half empty, so the whole
global batch is dealt longest first to the micro-batch (of every rank and micro-step) with the fewest tokens so far,
``per_device_batch_size`` examples each. Every micro-batch then carries about the same number of tokens, which is
what a packed micro-batch costs. Steps 1, 2 and 4 are unchanged, so a packed run trains on the same global batches,
in the same order, as an unpacked one.

Unlike the original, ``len(sampler)`` is exactly what iteration yields (the original could yield one extra global
batch, which pushed its LR schedule past its end). ``state_dict``/``load_state_dict`` resume mid-epoch with exactly
the remaining indices.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import Sampler


class ModalityLengthSampler(Sampler[int]):
    """Yields this rank's indices; see the module docstring for the order.

    ``modality_lengths`` is ``[(has_image, num_tokens)]`` per example. ``image_tokens`` is added to the length of
    image examples when ordering (``PrismVLM.num_image_tokens``: what the model splices in), e.g. 576 for a 24×24
    patch grid with one token per patch, 144 after a 2×2 pixel shuffle.
    """

    def __init__(
        self,
        modality_lengths: Sequence[tuple[bool, int]],
        *,
        global_batch_size: int,
        per_device_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        group_by_length: bool = True,
        drop_last: bool = False,
        image_tokens: int = 0,
        packing: bool = False,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        if per_device_batch_size < 1 or global_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        step = per_device_batch_size * world_size
        if global_batch_size % step:
            raise ValueError(
                f"global_batch_size ({global_batch_size}) must be a multiple of per_device_batch_size × world_size "
                f"({per_device_batch_size} × {world_size} = {step})"
            )
        if not modality_lengths:
            raise ValueError("cannot sample from an empty dataset")
        self.lengths = [int(n) + (image_tokens if has_image else 0) for has_image, n in modality_lengths]
        self.has_image = [bool(has_image) for has_image, _ in modality_lengths]
        self.global_batch_size = global_batch_size
        self.per_device_batch_size = per_device_batch_size
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.drop_last = drop_last
        self.packing = packing
        self.epoch = 0
        self._skip = 0  # indices of this epoch already consumed (set by load_state_dict)
        self._yielded = 0
        self.grad_accumulation_steps = global_batch_size // step
        self._num_global_batches = sum(self._batches_in(n) for n in self._modality_counts())
        if self._num_global_batches == 0:
            raise ValueError(
                f"drop_last leaves no global batch: no modality has {global_batch_size} examples "
                f"(counts: {self._modality_counts()})"
            )

    # -- sizes --------------------------------------------------------------------------------------------------
    def _modality_counts(self) -> list[int]:
        images = sum(self.has_image)
        return [n for n in (images, len(self.has_image) - images) if n]

    def _batches_in(self, count: int) -> int:
        full, rest = divmod(count, self.global_batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __len__(self) -> int:
        """Indices this rank yields per epoch (a resumed epoch yields fewer: see ``remaining``)."""
        return self._num_global_batches * self.global_batch_size // self.world_size

    @property
    def num_global_batches(self) -> int:
        return self._num_global_batches

    @property
    def remaining(self) -> int:
        return len(self) - self._skip

    # -- order --------------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0  # a resume point belongs to the epoch it was saved in
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        rng = random.Random(f"prism-sampler:{self.seed}:{self.epoch}")
        batches: list[list[int]] = []
        for want_image in (True, False):
            indices = [i for i, has in enumerate(self.has_image) if has == want_image]
            if not indices:
                continue
            rng.shuffle(indices)
            for b in range(self._batches_in(len(indices))):
                batch = indices[b * self.global_batch_size : (b + 1) * self.global_batch_size]
                # Top a short last batch up by cycling through this modality's (shuffled) indices.
                k = 0
                while len(batch) < self.global_batch_size:
                    batch.append(indices[k % len(indices)])
                    k += 1
                batches.append(batch)
        rng.shuffle(batches)
        if self.group_by_length and len(batches) > 1:
            longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
            batches.insert(0, batches.pop(longest))
        return batches

    def _deal(self, global_batch: list[int]) -> list[list[int]]:
        """Split one global batch into per-rank lists (micro-step by micro-step, concatenated)."""
        per_rank: list[list[int]] = [[] for _ in range(self.world_size)]
        step = self.per_device_batch_size * self.world_size
        if self.packing:  # micro-batch k of the step goes to rank k % world_size, micro-step k // world_size
            for k, bucket in enumerate(self._balance(global_batch, self.grad_accumulation_steps * self.world_size)):
                per_rank[k % self.world_size] += bucket
            return per_rank
        if self.group_by_length:
            global_batch = sorted(global_batch, key=lambda i: -self.lengths[i])
        for start in range(0, len(global_batch), step):
            micro = global_batch[start : start + step]
            if not self.group_by_length:
                for r in range(self.world_size):
                    per_rank[r] += micro[r * self.per_device_batch_size : (r + 1) * self.per_device_batch_size]
                continue
            for r, bucket in enumerate(self._balance(micro, self.world_size)):
                per_rank[r] += bucket
        return per_rank

    def _balance(self, indices: list[int], count: int) -> list[list[int]]:
        """``count`` buckets of ``per_device_batch_size`` indices: longest first to the non-full bucket with the
        smallest total so far, which balances their token counts."""
        buckets: list[list[int]] = [[] for _ in range(count)]
        totals = [0] * count
        for i in sorted(indices, key=lambda i: -self.lengths[i]):
            b = min((b for b in range(count) if len(buckets[b]) < self.per_device_batch_size),
                    key=lambda b: (totals[b], b))
            buckets[b].append(i)
            totals[b] += self.lengths[i]
        return buckets

    def epoch_indices(self, rank: int | None = None) -> list[int]:
        """Every index ``rank`` (default: this rank) gets this epoch, ignoring any resume point."""
        rank = self.rank if rank is None else rank
        out: list[int] = []
        for batch in self._global_batches():
            out += self._deal(batch)[rank]
        return out

    def __iter__(self) -> Iterator[int]:
        # Not a generator function: the counters reset when iteration starts, not at the first next().
        indices = self.epoch_indices()[self._skip :]
        self._yielded = self._skip
        self._skip = 0  # a resume point applies to one pass only
        return self._count(indices)

    def _count(self, indices: list[int]) -> Iterator[int]:
        for i in indices:
            self._yielded += 1
            yield i

    # -- resuming -----------------------------------------------------------------------------------------------
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this epoch stands. ``consumed`` is how many of this rank's indices the training loop has used;
        pass it when a DataLoader prefetches (the sampler's own count runs ahead), otherwise the yielded count
        is used."""
        return {
            "epoch": self.epoch,
            "consumed": self._yielded if consumed is None else int(consumed),
            "seed": self.seed,
            "num_examples": len(self.lengths),
            "global_batch_size": self.global_batch_size,
            "per_device_batch_size": self.per_device_batch_size,
            "world_size": self.world_size,
            "packing": self.packing,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue an epoch: the next iteration yields exactly the indices not yet consumed."""
        mine = {
            "seed": self.seed,
            "num_examples": len(self.lengths),
            "global_batch_size": self.global_batch_size,
            "per_device_batch_size": self.per_device_batch_size,
            "world_size": self.world_size,
            "packing": self.packing,
        }
        saved = {"packing": False, **state}  # states saved before packing existed were unpacked
        changed = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in mine.items() if saved.get(k) != v]
        if changed:
            raise ValueError("cannot resume the sampler, the run changed: " + "; ".join(changed))
        consumed = int(state["consumed"])
        if not 0 <= consumed <= len(self):
            raise ValueError(f"cannot resume the sampler: consumed={consumed} is outside [0, {len(self)}]")
        self.epoch = int(state["epoch"])
        self._skip = self._yielded = consumed
