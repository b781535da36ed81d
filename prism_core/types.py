"""Shared types every role agrees on: the IGNORE label, conversation turns, prompt segments, examples and batches.

Kept free of torch at import time: tensors appear only in annotations.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    PixelValues = torch.Tensor | dict[str, torch.Tensor]

#: Label value that the loss ignores (PyTorch's cross-entropy default).
IGNORE_INDEX = -100

#: The two roles of a conversation, spelled as in LLaVA data.
HUMAN: Literal["human"] = "human"
ASSISTANT: Literal["gpt"] = "gpt"


class Role(str, enum.Enum):
    """The plugin roles; the value is the suffix of the entry-point group ``prism.<value>``."""

    VISION_BACKBONE = "vision_backbones"
    LLM_BACKBONE = "llm_backbones"
    PROJECTOR = "projectors"
    PROMPT_FORMAT = "prompt_formats"
    DATASET = "datasets"
    TRAIN_STRATEGY = "train_strategies"
    EVAL_TASK = "eval_tasks"
    MODEL_ADAPTER = "model_adapters"

    @property
    def group(self) -> str:
        return f"prism.{self.value}"

    @property
    def label(self) -> str:
        """Human-readable singular name, e.g. ``vision backbone``."""
        return _ROLE_LABELS[self.value]


_ROLE_LABELS = {
    "vision_backbones": "vision backbone",
    "llm_backbones": "LLM backbone",
    "projectors": "projector",
    "prompt_formats": "prompt format",
    "datasets": "dataset",
    "train_strategies": "train strategy",
    "eval_tasks": "evaluation task",
    "model_adapters": "model adapter",
}


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: ``role`` is ``"human"`` or ``"gpt"``."""

    role: str
    message: str


@dataclass(frozen=True)
class Segment:
    """A piece of rendered prompt text and whether the model is trained to produce it."""

    text: str
    supervised: bool


@dataclass
class Example:
    """One tokenized training example.

    ``labels`` equals ``input_ids`` on supervised positions and ``IGNORE_INDEX`` elsewhere (always on BOS).
    ``pixel_values`` is ``None`` for text-only examples. ``source`` locates the example for error messages,
    e.g. ``"llava_v1_5_mix665k.json#1234"``.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: PixelValues | None
    source: str = ""

    @property
    def has_image(self) -> bool:
        return self.pixel_values is not None


@dataclass(frozen=True)
class EvalExample:
    """One item of an evaluation task: ``id`` is unique within the task and keys its prediction; ``image`` is the
    image file (None: text only), opened by the evaluation runner; ``fields`` are what the task builds the prompt
    from and scores against (JSON-able: questions, reference answers, boxes); ``source`` names the annotation file
    and entry, for error messages."""

    id: str
    image: str | None
    fields: dict[str, Any]
    source: str = ""


@dataclass
class Batch:
    """A right-padded batch.

    ``pixel_values`` holds images for the multimodal rows only (``len(multimodal_indices)`` of them, in that
    order), so text-only rows never run the vision backbone. ``sources`` names each row for error messages.

    A packed batch (``prism_core.data.packing``) holds several examples per row: ``example_ids`` numbers them
    (1, 2, ... in each row, 0 on padding), the tensors already have each image's slots after its example's BOS,
    ``multimodal_indices[m]`` is the row of image ``m`` (a row may carry several) and ``image_positions[m]`` its
    first slot; ``sources`` then names each example.
    """

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] bool
    labels: torch.Tensor  # [B, T] long
    multimodal_indices: torch.Tensor  # [M] long, rows that carry an image
    pixel_values: PixelValues | None  # [M, 3, H, W] or {name: [M, 3, H, W]}; None when M == 0
    sources: tuple[str, ...] = field(default_factory=tuple)
    example_ids: torch.Tensor | None = None  # [B, T] long, packed batches only
    image_positions: torch.Tensor | None = None  # [M] long, packed batches only

    @property
    def num_examples(self) -> int:
        """Examples in the batch: its rows, or for a packed batch the examples packed into them (``sources`` names
        each, so counting needs no device sync)."""
        if self.example_ids is None:
            return int(self.input_ids.shape[0])
        return len(self.sources) if self.sources else int(self.example_ids.amax(dim=1).sum())

    def to(self, device: torch.device | str, pixel_dtype: torch.dtype | None = None) -> Batch:
        """Move every tensor to ``device`` (pixels optionally cast to ``pixel_dtype``)."""

        def move_pixels(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=pixel_dtype or t.dtype, non_blocking=True)

        pixels = self.pixel_values
        if isinstance(pixels, dict):
            pixels = {k: move_pixels(v) for k, v in pixels.items()}
        elif pixels is not None:
            pixels = move_pixels(pixels)
        return Batch(
            input_ids=self.input_ids.to(device, non_blocking=True),
            attention_mask=self.attention_mask.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
            multimodal_indices=self.multimodal_indices.to(device, non_blocking=True),
            pixel_values=pixels,
            sources=self.sources,
            example_ids=None if self.example_ids is None else self.example_ids.to(device, non_blocking=True),
            image_positions=(None if self.image_positions is None
                             else self.image_positions.to(device, non_blocking=True)),
        )
