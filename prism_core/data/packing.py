"""Sequence packing: several examples per row, each kept apart, so a micro-batch spends its positions on tokens.

``[train] packing = true``. The sampler deals each global batch so that every micro-batch holds a similar number
of tokens (``ModalityLengthSampler(packing=True)``); the collator then lays a micro-batch's examples into as few
rows of at most ``max_length`` positions as fit (``plan_rows``: first-fit decreasing, then the narrowest rectangle),
**image tokens counted**. A packed row looks like

    BOS_a  [image a: num_image_tokens slots]  text a ...  BOS_b  text b ...  BOS_c  [image c]  text c ...  pad

Each image's slots follow its own example's BOS, exactly where the unpacked splice puts them; the composed model
fills them with the projected patches (``PrismVLM.fill_image_slots``). ``example_ids`` numbers the examples of each
row 1, 2, ... (0 on padding): the model restarts position ids at every example and the LLM backbone keeps attention
inside it (block-diagonal causal; ``LLMBackbone.supports_packing``); the loss never predicts across a boundary.
Loss normalisation is unchanged: the sum over supervised tokens of the global batch divided by their count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from prism_core.types import IGNORE_INDEX, Batch, Example


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` in bins of at most ``capacity``: longest first, each into the first bin it fits
    (ties broken by index, so the result is deterministic)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


def plan_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Rows of example indices, each row's total at most ``capacity``, minimising rows × width: the batch is a
    rectangle as wide as its fullest row, so that is the compute it costs.

    From the row count first-fit decreasing needs at ``capacity`` upwards, the narrowest width at which it still
    fits that many rows (binary search); the cheapest (rows, width) wins, fewer rows on a tie. So never worse than
    first-fit decreasing, and deterministic."""
    if not lengths:
        return []
    longest, total = max(lengths), sum(lengths)
    if longest > capacity:
        raise ValueError(f"an example of {longest} positions does not fit a row of {capacity}")
    best = first_fit_decreasing(lengths, capacity)
    best_cost = _cost(best, lengths)
    for rows in range(len(best), len(lengths) + 1):
        if rows * longest >= best_cost:
            break  # every row is at least `longest` wide: more rows only cost more
        low, high = max(longest, -(-total // rows)), capacity  # `high` fits in `rows` rows
        if rows * low >= best_cost:
            continue
        while low < high:
            mid = (low + high) // 2
            if len(first_fit_decreasing(lengths, mid)) <= rows:
                high = mid
            else:
                low = mid + 1
        packed = first_fit_decreasing(lengths, high)
        if _cost(packed, lengths) < best_cost:
            best, best_cost = packed, _cost(packed, lengths)
    return best


def _cost(rows: list[list[int]], lengths: Sequence[int]) -> int:
    return len(rows) * max(sum(lengths[i] for i in row) for row in rows)


def example_ids_of(rows: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    """``example_ids`` ``[len(rows), width]`` of rows packed from examples of these lengths, left to right (1, 2, ...
    per row, 0 on the padding after them): what a backbone plugin's packing tests feed its attention."""
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for r, lengths in enumerate(rows):
        start = 0
        for k, length in enumerate(lengths, start=1):
            ids[r, start : start + length] = k
            start += length
    return ids


def pack_examples(
    rows: Sequence[tuple[Example, torch.Tensor, torch.Tensor]], *, max_length: int, image_tokens: int,
    pad_token_id: int, stack_pixels: Any,
) -> Batch:
    """The packed ``Batch`` of already truncated ``(example, input_ids, labels)``.

    ``input_ids`` / ``labels`` / ``attention_mask`` are the LLM's final layout: each image's ``image_tokens`` slots
    (pad id, attended, IGNORE) right after its example's BOS. ``multimodal_indices[m]`` is the row of image ``m`` and
    ``image_positions[m]`` its first slot; ``pixel_values`` follow that order (row by row, left to right).
    ``sources`` names every example, in the same order."""
    lengths = [len(ids) + (image_tokens if example.has_image else 0) for example, ids, _ in rows]
    plan = plan_rows(lengths, max_length)
    width = max(sum(lengths[i] for i in row) for row in plan)
    shape = (len(plan), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.bool)
    example_ids = torch.zeros(shape, dtype=torch.long)
    image_rows: list[int] = []
    image_positions: list[int] = []
    order: list[Example] = []
    for r, row in enumerate(plan):
        start = 0
        for k, i in enumerate(row, start=1):
            example, ids, lab = rows[i]
            end = start + lengths[i]
            slots = image_tokens if example.has_image else 0
            input_ids[r, start] = ids[0]  # BOS, then the image's slots, then the rest of the text
            labels[r, start] = lab[0]
            input_ids[r, start + 1 + slots : end] = ids[1:]
            labels[r, start + 1 + slots : end] = lab[1:]
            attention_mask[r, start:end] = True
            example_ids[r, start:end] = k
            if example.has_image:
                image_rows.append(r)
                image_positions.append(start + 1)
            order.append(example)
            start = end
    images = [example for example in order if example.has_image]
    return Batch(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels,
        multimodal_indices=torch.tensor(image_rows, dtype=torch.long), pixel_values=stack_pixels(images),
        sources=tuple(example.source for example in order), example_ids=example_ids,
        image_positions=torch.tensor(image_positions, dtype=torch.long),
    )
