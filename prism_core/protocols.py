"""The six roles a plugin can fill, as ``typing.Protocol`` classes.

Each protocol's docstring is its contract. Concrete classes never inherit from these: the conformance suite in
``prism_core.testing`` checks them structurally (``isinstance`` works because they are runtime-checkable).
Torch appears in annotations only, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from prism_core.types import Example, PixelValues, Segment, Turn

ImageTransform = Callable[["Image"], "PixelValues"]


@runtime_checkable
class VisionBackbone(Protocol):
    """Turns images into patch features. An ``nn.Module``.

    - ``image_transform(pil_image)`` returns a ``[3, H, W]`` float tensor, or ``{member: tensor}`` for fused
      backbones; it accepts PIL images of any mode and size and carries ``is_prismatic = True`` (the marker the
      original evaluation harness checks).
    - ``forward(pixel_values)`` takes ``[B, 3, H, W]`` (or the dict of such) and returns patch features
      ``[B, num_patches, embed_dim]`` with prefix tokens (CLS, registers) removed.
    - ``shard_block_classes`` are the module classes FSDP wraps individually (the transformer blocks).
    - ``set_trainable(False)`` freezes every parameter (and puts the module in eval mode); ``True`` undoes it.
    """

    image_transform: ImageTransform
    embed_dim: int
    num_patches: int
    image_size: int
    shard_block_classes: tuple[type, ...]

    def forward(self, pixel_values: PixelValues) -> torch.Tensor: ...

    def set_trainable(self, trainable: bool) -> None: ...


@runtime_checkable
class LLMBackbone(Protocol):
    """A causal language model driven by input embeddings. An ``nn.Module``.

    - ``tokenizer`` is a Hugging Face tokenizer with a pad token, ``padding_side="right"`` for training.
    - BOS contract: ``tokenizer(text)`` starts with exactly one BOS (``tokenizer.bos_token_id``) and
      ``tokenizer(text, add_special_tokens=False)`` has none, unless ``bos_in_prompt_text`` is true (Phi-2): then
      the prompt format writes the BOS string into the first turn itself. Checked when the backbone is built.
    - ``embed_input_ids(ids)`` returns ``[B, T, embed_dim]``.
    - ``forward(inputs_embeds=, attention_mask=, labels=None, past_key_values=None, use_cache=False)`` returns an
      object with ``.loss`` (shifted cross-entropy over labels != IGNORE, mean over supervised tokens),
      ``.logits`` ``[B, T, vocab]`` and ``.past_key_values``.
    - ``generate(inputs_embeds=, attention_mask=, **hf_generate_kwargs)`` returns only the new token ids
      ``[B, new]``, KV-cached, padded with the pad id after a row's EOS.
    - ``decoder_layer_classes`` are wrapped by FSDP and activation checkpointing.
    - ``default_prompt_format`` is the prompt-format kind the model was trained with.
    """

    tokenizer: Any
    embed_dim: int
    decoder_layer_classes: tuple[type, ...]
    default_prompt_format: str
    bos_in_prompt_text: bool

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def forward(
        self,
        *,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> Any: ...

    def generate(self, *, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...

    def set_trainable(self, trainable: bool) -> None: ...


@runtime_checkable
class Projector(Protocol):
    """Maps patch features ``[B, N, in_dim]`` to LLM embeddings ``[B, N, out_dim]``. An ``nn.Module``."""

    in_dim: int
    out_dim: int

    def forward(self, features: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class PromptFormat(Protocol):
    """Renders a conversation into text, turn by turn, saying which spans are supervised.

    - ``render(turns)`` returns one ``Segment`` per turn, in order. Assistant (``"gpt"``) segments are supervised
      and include the end-of-turn text (e.g. ``</s>``). Roles must alternate starting with ``"human"``; a
      violation raises ``PromptFormatError`` naming the turn index. ``<image>`` markers are removed from
      messages and messages are stripped, as in the original.
    - ``prompt(turns)`` is the text to generate from after the last (human) turn: the rendered turns with the
      leading BOS string removed (the tokenizer adds BOS) and trailing spaces stripped, so it ends where the
      answer's first token begins (SentencePiece and BPE tokenizers carry a word's leading space in its token).
    - Training tokenizes through the same ``prompt`` (``prism_core.prompting.tokenize_conversation``): the ids
      before each answer are those of ``prompt(history)``, so the model is trained on what it will be given.
    - ``system_prompt`` is ``None`` for formats without one.
    """

    kind: str
    system_prompt: str | None

    def render(self, turns: Sequence[Turn]) -> list[Segment]: ...

    def prompt(self, turns: Sequence[Turn]) -> str: ...


@runtime_checkable
class Dataset(Protocol):
    """A map-style data set of tokenized examples.

    - ``dataset[i]`` returns an ``Example`` whose ``source`` names the file and entry.
    - ``modality_lengths()`` returns ``(has_image, num_tokens)`` per example without loading images, for the
      modality- and length-grouping sampler.
    - ``bad_examples`` counts examples skipped under ``on_bad_example = "skip"`` (never skipped silently).
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Example: ...

    def modality_lengths(self) -> Sequence[tuple[bool, int]]: ...


@runtime_checkable
class TrainStrategy(Protocol):
    """How a model is placed, sharded and synchronised across ranks.

    - ``setup()`` initialises the process group when running under torchrun (idempotent); ``rank``,
      ``world_size`` and ``device`` are valid after it.
    - ``wrap(model)`` returns the module to train (DDP, FSDP2 ``fully_shard`` of each block listed by the
      backbones' ``shard_block_classes`` / ``decoder_layer_classes``, or the model itself).
    - ``all_reduce_sum(tensor)`` sums across ranks in place and returns it.
    - ``clip_grad_norm(model, max_norm)`` clips and returns the total norm before clipping, as a float.
    - ``model_state(model)`` / ``load_model_state(model, state)``: state dicts for checkpointing (sharded
      strategies return distributed tensors understood by ``torch.distributed.checkpoint``).
    - ``full_state_dict(model)`` gathers a consolidated CPU state dict on rank 0 (empty elsewhere) for export.
    - ``teardown()`` destroys the process group if ``setup()`` created it.
    """

    rank: int
    world_size: int
    device: torch.device
    sharded: bool

    def setup(self) -> None: ...

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> float: ...

    def model_state(self, model: torch.nn.Module) -> Mapping[str, Any]: ...

    def load_model_state(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None: ...

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]: ...

    def barrier(self) -> None: ...

    def teardown(self) -> None: ...


#: Role → protocol, for the conformance suite and ``compose``.
PROTOCOLS: Mapping[str, type] = {
    "vision_backbones": VisionBackbone,
    "llm_backbones": LLMBackbone,
    "projectors": Projector,
    "prompt_formats": PromptFormat,
    "datasets": Dataset,
    "train_strategies": TrainStrategy,
}

__all__ = [
    "PROTOCOLS",
    "Dataset",
    "ImageTransform",
    "LLMBackbone",
    "Projector",
    "PromptFormat",
    "TrainStrategy",
    "VisionBackbone",
]
