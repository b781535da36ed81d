"""Batch construction for the model tests (a tiny stand-in for the data plugin's collator)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from prism_core.prompting import tokenize_conversation
from prism_core.types import IGNORE_INDEX, Batch, Turn

COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (240, 240, 0)]


def image(i: int) -> Image.Image:
    img = Image.new("RGB", (24, 20), COLOURS[i % len(COLOURS)])
    img.paste((255 - 40 * i, 30 * i, 90), (4, 4, 12 + i, 14))
    return img


def example(vlm: Any, question: str, answer: str) -> tuple[list[int], list[int]]:
    turns = [Turn("human", question), Turn("gpt", answer)]
    return tokenize_conversation(vlm.tokenizer, vlm.prompt_format, turns)


def make_batch(vlm: Any, rows: list[tuple[str, str, int | None]]) -> Batch:
    """Rows of (question, answer, image index or None), right-padded like the collator does."""
    encoded = [example(vlm, q, a) for q, a, _ in rows]
    width = max(len(ids) for ids, _ in encoded)
    pad = vlm.tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in encoded])
    labels = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in encoded])
    mask = torch.tensor([[True] * len(ids) + [False] * (width - len(ids)) for ids, _ in encoded])
    image_rows = [i for i, (_, _, img) in enumerate(rows) if img is not None]
    pixels = None
    if image_rows:
        transformed = [vlm.image_transform(image(rows[i][2])) for i in image_rows]
        pixels = ({k: torch.stack([t[k] for t in transformed]) for k in transformed[0]}
                  if isinstance(transformed[0], dict) else torch.stack(transformed))
    return Batch(input_ids=input_ids, attention_mask=mask, labels=labels,
                 multimodal_indices=torch.tensor(image_rows, dtype=torch.long), pixel_values=pixels,
                 sources=tuple(f"test.json#{i}" for i in range(len(rows))))


ROWS = [
    ("What colour is the shape?", "red", 0),
    ("Describe the picture in detail please.", "a green square on white", None),
    ("How many?", "two", 2),
]
