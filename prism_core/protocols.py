"""The roles a plugin can fill, as ``typing.Protocol`` classes.

Each protocol's docstring is its contract. Concrete classes never inherit from these: the conformance suite in
``prism_core.testing`` checks them structurally (``isinstance`` works because they are runtime-checkable).
Torch appears in annotations only, so importing this module stays cheap.

Construction on the meta device (optional, for the model components): ``prism_core.build`` calls a spec's
``build()`` under ``torch.device("meta")`` and materialises the model later, where it will live
(``prism_core.materialize``). A component module opts in by defining

- ``init_module(module, name)``: fill ``module``'s *own* parameters and buffers (``recurse=False``) in place with
  the component's random initialisation; ``name`` is the module's path inside the component. Torch's RNG is
  seeded from (``init_seed``, ``name``) before each call, so values never depend on construction order;
- ``init_seed: int`` (optional; default: the model's seed);
- ``initial_state()`` (optional): ``{key relative to the component: tensor}`` of the weights it was configured
  with (pretrained, a file), ideally memory-mapped; ``{}`` for random init. Called only when needed.

Under meta, ``build()`` must not read weights (a meta tensor silently drops them): return them from
``initial_state()`` instead. ``prism_core.materialize.build_on_meta`` gives an eager ``build()`` the same values.
A component without ``init_module`` (or one that raises on meta) is simply built eagerly, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from prism_core.types import EvalExample, Example, PixelValues, Segment, Turn

ImageTransform = Callable[["Image"], "PixelValues"]


@runtime_checkable
class VisionBackbone(Protocol):
    """Turns images into patch features. An ``nn.Module``.

    - ``image_transform(pil_image)`` returns a ``[3, H, W]`` float tensor, or ``{member: tensor}`` for fused
      backbones; it accepts PIL images of any mode and size and carries ``is_prismatic = True`` (the marker the
      original evaluation harness checks).
    - ``forward(pixel_values)`` takes ``[B, 3, H, W]`` (or the dict of such) and returns patch features
      ``[B, num_patches, embed_dim]`` with prefix tokens (CLS, registers) removed, in row-major order of the square
      ``side × side`` patch grid (``side = √num_patches``: ``patch_grid``), which grid projectors rely on.
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

    Optional (the composed model checks with ``getattr``):

    - ``supports_packing = True`` declares that ``forward`` isolates packed examples: given ``example_ids`` ``[B, T]``
      (the examples of each row numbered 1, 2, ...; 0 on trailing padding) and ``position_ids`` ``[B, T]`` (restarting
      at 0 where each begins), every position attends only to earlier positions of its own example (block-diagonal
      causal), whatever the attention kernel. Its spec says the same without building
      (``LLMBackboneSpec.supports_packing``); ``train.packing`` with a backbone that does not is a spec error.
    - ``output_head``: the module mapping final hidden states to logits (``lm_head``), or None. With one,
      ``forward(..., logits=False)`` returns an object whose ``.last_hidden_state`` ``[B, T, embed_dim]`` are those
      states, computing no logits: training then computes its loss a chunk of supervised positions at a time.
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
    """Maps patch features ``[B, N, in_dim]`` to LLM embeddings ``[B, T, out_dim]``. An ``nn.Module``.

    ``T``, the number of image tokens the LLM sees per image, is the projector's to choose: ``num_tokens(N)``
    (optional; without it ``T = N``, one embedding per patch). A projector that works on the patch grid (pixel
    shuffle, pooling) reads it from ``N`` (``patch_grid``); a resampler returns a fixed count whatever ``N``. The
    composed model, the collator's text budget, the length-grouping sampler, generation, scoring, the MFU
    estimate and export all take ``T`` from here (``image_tokens``); the conformance suite checks that the output
    has the declared count for several grids. The spec says the same count without building
    (``ProjectorSpec.num_tokens``) and refuses grids it cannot take (``ProjectorSpec.patch_problems``).
    """

    in_dim: int
    out_dim: int

    def forward(self, features: torch.Tensor) -> torch.Tensor: ...


def patch_grid(num_patches: int) -> tuple[int, int] | None:
    """``(rows, cols)`` of the square grid of ``num_patches`` patches, or None when that is not a square."""
    side = math.isqrt(num_patches) if num_patches > 0 else 0
    return (side, side) if side > 0 and side * side == num_patches else None


def image_tokens(projector: Any, num_patches: int) -> int:
    """Image tokens ``projector`` makes of ``num_patches`` patch features: its ``num_tokens(num_patches)``, or
    ``num_patches`` for a projector without one (one embedding per patch)."""
    count = getattr(projector, "num_tokens", None)
    return int(count(num_patches)) if callable(count) else int(num_patches)


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
      backbones' ``shard_block_classes`` / ``decoder_layer_classes``, or the model itself). With
      ``accepts_meta = True`` the model it receives may still be on the meta device and ``wrap`` materialises it
      (``prism_core.materialize.materialize(model, device=...)``; a sharded strategy after sharding, so each rank
      holds only its shards). Without that attribute the loop materialises the model on the CPU first.
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


@runtime_checkable
class EvalTask(Protocol):
    """A benchmark: its examples read from the benchmark's official files, the prompts its original harness builds,
    and its official metric. Run by ``prism_core.evaluate`` (and ``prism eval``, and ``[eval]`` during training).

    - ``name`` names the task in results, predictions files and tracker keys; ``headline`` is the key of the
      metric reported first (``score``'s result always has it).
    - ``examples()`` returns every example in a stable order, each ``id`` unique. A missing or malformed annotation
      file or entry raises ``prism_core.data.DataError`` naming the file, the entry and the field.
    - ``predict(vlm, examples, pixel_values)`` answers one batch: ``pixel_values[i]`` is the transformed image of
      ``examples[i]`` (None without one). It makes a fixed number of batched model calls (``generate_batch``, or
      ``return_string_probabilities`` for scoring tasks), never one per example, and returns one JSON-able record
      per example with its ``id`` and everything ``score`` needs.
    - ``score(records)`` computes the metrics from the records of all examples, in any order (they are gathered
      from every rank): a JSON-able dict of numbers, or of dicts of numbers for breakdowns.
    """

    name: str
    headline: str

    def examples(self) -> Sequence[EvalExample]: ...

    def predict(self, vlm: Any, examples: Sequence[EvalExample],
                pixel_values: Sequence[PixelValues | None]) -> list[dict[str, Any]]: ...

    def score(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]: ...


@runtime_checkable
class ModelAdapter(Protocol):
    """Parameter-efficient fine-tuning: small trainable modules (LoRA and kin) injected into a composed model whose
    base weights stay frozen. ``prism_core.adapters.adapt`` applies it (``[train.adapter]`` in training, and
    ``prism_core.load`` of a saved adapter) once the model is built, on the meta device or real, before a training
    strategy wraps it. The core resolves the spec's ``target`` patterns and decides what trains.

    - ``spec`` is the ``ModelAdapterSpec`` it was built from (saved as ``adapter.toml`` beside the adapter).
    - ``supports(module)``: whether ``module`` can carry the adapter (LoRA: ``nn.Linear``).
    - ``inject(model, module_names)`` replaces each named module in place by its adapted version and returns the
      adapter's parameter names. An adapted module names the module it wraps in ``wrapped_child_name``
      (``prism_core.materialize``), so the base weights keep their state-dict names, values and seeds. The
      adapter's own parameters are left on the meta device with an ``init_module`` hook that fills them (seeded
      from the adapter's ``seed`` and their names): the core then materialises them, whether or not the base is
      real. ``inject`` may make the base real itself when it needs its values (QLoRA quantises them); such a kind
      says so in its spec's ``train_problems`` for sharded strategies.
    - ``after_materialize(model)`` fills values that depend on the base weights (DoRA's magnitudes) once the model
      is real where it trains (sharded: each rank its own shards, alike on every rank). Called before the first
      step, never after a load.
    - ``write(state, directory)`` saves the adapter's tensors (``state``: state-dict name → tensor) in the kind's
      own layout (peft's for the LLM, so peft loads it) and returns JSON-able notes; ``read(directory, notes)``
      returns those tensors again, keyed by state-dict name.
    - ``merge(model)`` folds the adapter into the base weights in place: the model is left with the base
      architecture (the state-dict keys of the unadapted model) and computes what the adapted one did.
    - ``disabled(model)`` is a context manager inside which the model computes as its base.
    """

    spec: Any

    def supports(self, module: torch.nn.Module) -> bool: ...

    def inject(self, model: torch.nn.Module, module_names: Sequence[str]) -> list[str]: ...

    def after_materialize(self, model: torch.nn.Module) -> None: ...

    def write(self, state: Mapping[str, torch.Tensor], directory: Any) -> dict[str, Any]: ...

    def read(self, directory: Any, notes: Mapping[str, Any]) -> dict[str, torch.Tensor]: ...

    def merge(self, model: torch.nn.Module) -> None: ...

    def disabled(self, model: torch.nn.Module) -> Any: ...


#: Role → protocol, for the conformance suite and ``compose``.
PROTOCOLS: Mapping[str, type] = {
    "vision_backbones": VisionBackbone,
    "llm_backbones": LLMBackbone,
    "projectors": Projector,
    "prompt_formats": PromptFormat,
    "datasets": Dataset,
    "train_strategies": TrainStrategy,
    "eval_tasks": EvalTask,
    "model_adapters": ModelAdapter,
}

__all__ = [
    "PROTOCOLS",
    "Dataset",
    "EvalTask",
    "ImageTransform",
    "LLMBackbone",
    "ModelAdapter",
    "Projector",
    "PromptFormat",
    "TrainStrategy",
    "VisionBackbone",
    "image_tokens",
    "patch_grid",
]
