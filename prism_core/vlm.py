"""The composed model: vision backbone → projector → causal LLM, with projected patches spliced in right after BOS.

Rows of a batch may mix image+text and text-only examples; only image rows run the vision backbone, and the splice
is one scatter (no per-row Python loop). A packed batch (``prism_core.data.packing``: several examples per row) comes
with its image slots already laid out; the model fills them, restarts position ids at each example and has the LLM
keep attention inside it. Training asks for no logits (``logits=False``): the loss is then computed from the final
hidden states a chunk of supervised positions at a time, so ``[B, T, vocab]`` logits never exist.
Generation and scoring live in ``prism_core.generation`` and are exposed here as methods with the original Prismatic
signatures (``generate``, ``generate_batch``, ``get_prompt_builder``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prism_core import generation
from prism_core.protocols import image_tokens
from prism_core.types import IGNORE_INDEX

if TYPE_CHECKING:
    from PIL.Image import Image

    from prism_core.prompting import PromptBuilder
    from prism_core.spec import ModelSpec
    from prism_core.types import Batch, PixelValues

#: Which modules each training stage trains (the original ``freeze_backbones``).
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "align": ("projector",),
    "finetune": ("projector", "llm_backbone"),
    "full-finetune": ("vision_backbone", "projector", "llm_backbone"),
}

#: Short aliases accepted in trainable patterns: ``llm.*layers.1.*`` means ``llm_backbone.*layers.1.*``.
_PATTERN_ALIASES = {"vision_backbone.": "vision.", "llm_backbone.": "llm."}


def matching_patterns(name: str, patterns: Sequence[str]) -> list[str]:
    """The trainable-style patterns (fnmatch, ``vision.``/``llm.`` aliases) among ``patterns`` that match the
    parameter or module ``name``."""
    names = [name] + [alias + name[len(full):] for full, alias in _PATTERN_ALIASES.items() if name.startswith(full)]
    return [p for p in patterns if any(fnmatch.fnmatchcase(n, p) for n in names)]


class NoSupervisedTokensError(ValueError):
    """A batch whose labels are all IGNORE: training on it would silently contribute a loss of 0."""


class PackingNotSupportedError(ValueError):
    """A packed batch for an LLM backbone that cannot keep its examples apart (no ``supports_packing``)."""


#: fp32 logits computed at once by the chunked loss: 2**24 elements (64 MiB; 523 positions at vocab 32064).
LOSS_CHUNK_ELEMENTS = 2**24


@dataclass
class PrismVLMOutput:
    """``loss`` is the mean over supervised tokens, ``loss_sum`` their sum and ``num_tokens`` their count, so a
    training loop can normalise over micro-batches and ranks. ``attention_mask``/``labels`` are the spliced ones.
    ``logits`` is None when the loss was computed without them (``forward(..., logits=False)``)."""

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None
    num_tokens: torch.Tensor | None = None
    past_key_values: Any = None
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class Spliced:
    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None


class PrismVLM(nn.Module):
    def __init__(
        self,
        vision_backbone: nn.Module,
        projector: nn.Module,
        llm_backbone: nn.Module,
        prompt_format: Any = None,
        spec: ModelSpec | None = None,
        prompt_format_spec: Any = None,
    ) -> None:
        super().__init__()
        self.vision_backbone = vision_backbone
        self.projector = projector
        self.llm_backbone = llm_backbone
        self.prompt_format = prompt_format
        self.spec = spec
        self.prompt_format_spec = prompt_format_spec
        #: Set by DDP/FSDP strategies: a text-only micro-batch still runs vision + projector on a dummy image.
        self.keep_all_branches_in_graph = False
        self.stage: str | None = None
        self._dummy_pixels: PixelValues | None = None
        #: Materialisation (``prism_core.materialize``): the seed of components without their own ``init_seed``,
        #: and the saved model whose weights this one starts from (``ModelSpec.init_from``).
        self.init_seed: int = spec.seed if spec is not None else 0
        self.init_from: str | None = None
        #: The ``ModelAdapter`` injected by ``prism_core.adapters.adapt`` (LoRA, ...), or None.
        self.adapter: Any = None

    # -- properties --------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_patches(self) -> int:
        """Patch features the vision backbone makes of one image."""
        return int(self.vision_backbone.num_patches)

    @property
    def num_image_tokens(self) -> int:
        """Embeddings spliced into the LLM's sequence per image: the projector's count for the backbone's patches
        (``num_patches`` for a projector that keeps one per patch). The one number that text budgets, length
        grouping, packing, generation and export use."""
        return image_tokens(self.projector, self.num_patches)

    @property
    def tokenizer(self) -> Any:
        return self.llm_backbone.tokenizer

    @property
    def image_transform(self) -> Any:
        return self.vision_backbone.image_transform

    def initial_state(self) -> dict[str, torch.Tensor]:
        """Materialisation hook: the warm start's weights (memory-mapped, every key checked), or ``{}``."""
        if self.init_from is None:
            return {}
        from prism_core.io import read_weights

        return read_weights(self, self.init_from)

    # -- freezing ----------------------------------------------------------------------------------------------
    def configure_trainable(self, stage: str, trainable_patterns: Sequence[str] | None = None) -> list[str]:
        """Freeze per ``stage`` (``align``, ``finetune``, ``full-finetune``); ``trainable_patterns`` (fnmatch over
        parameter names, ``vision.``/``llm.`` accepted for ``vision_backbone.``/``llm_backbone.``) replace the
        stage's choice. Returns the trainable parameter names. Frozen backbones are put in eval mode."""
        if stage not in STAGE_MODULES:
            raise ValueError(f"unknown stage {stage!r} (stages: {', '.join(STAGE_MODULES)})")
        self.stage = stage
        keys = STAGE_MODULES[stage]
        for key in ("vision_backbone", "projector", "llm_backbone"):
            module = getattr(self, key)
            if hasattr(module, "set_trainable"):
                module.set_trainable(key in keys)
            else:
                module.requires_grad_(key in keys)
                module.train(key in keys)
        if trainable_patterns is not None:
            patterns = list(trainable_patterns)
            matched = dict.fromkeys(patterns, False)
            for name, param in self.named_parameters():
                hits = matching_patterns(name, patterns)
                param.requires_grad_(bool(hits))
                for p in hits:
                    matched[p] = True
            unmatched = [p for p, hit in matched.items() if not hit]
            if unmatched:
                raise ValueError(f"trainable pattern(s) {unmatched} match no parameter "
                                 f"(names look like {next(iter(dict(self.named_parameters())))!r})")
            for key in ("vision_backbone", "projector", "llm_backbone"):  # modules with any trainable param train
                module = getattr(self, key)
                module.train(any(p.requires_grad for p in module.parameters()))
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def _vision_needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.vision_backbone.parameters())

    # -- the splice --------------------------------------------------------------------------------------------
    def _vision_dtype(self) -> torch.dtype:
        for p in self.vision_backbone.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def _cast_pixels(self, pixel_values: PixelValues) -> PixelValues:
        device, dtype = self.device, self._vision_dtype()
        if isinstance(pixel_values, dict):
            return {k: v.to(device=device, dtype=dtype) for k, v in pixel_values.items()}
        return pixel_values.to(device=device, dtype=dtype)

    def embed_images(self, pixel_values: PixelValues) -> torch.Tensor:
        """``[M, num_image_tokens, llm_dim]`` image embeddings; no autograd graph through a frozen tower."""
        with torch.set_grad_enabled(self._vision_needs_grad()):
            features = self.vision_backbone(self._cast_pixels(pixel_values))
        return self.projector(features)

    def _dummy_image_pixels(self) -> PixelValues:
        if self._dummy_pixels is None:
            from PIL import Image

            size = int(getattr(self.vision_backbone, "image_size", 224))
            pixels = self.vision_backbone.image_transform(Image.new("RGB", (size, size)))
            self._dummy_pixels = {k: v[None] for k, v in pixels.items()} if isinstance(pixels, dict) else pixels[None]
        return self._dummy_pixels

    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        patch_embeds: torch.Tensor | None,
        multimodal_indices: torch.Tensor,
        *,
        pad_text_rows_left: bool = False,
    ) -> Spliced:
        """Insert ``patch_embeds[m]`` (the image's tokens) after the BOS of row ``multimodal_indices[m]``.

        BOS is the first attended token of a row, so right-padded (training) and left-padded (generation) rows
        both work. When any row has an image, every row grows by ``num_image_tokens``; text-only rows get masked zero
        embeddings (IGNORE labels) at the end, or at the start with ``pad_text_rows_left`` (generation).
        """
        embeds = self.llm_backbone.embed_input_ids(input_ids)
        attention_mask = attention_mask.bool()
        if patch_embeds is None or multimodal_indices.numel() == 0:
            return Spliced(embeds, attention_mask, labels)
        batch, length = input_ids.shape
        n = patch_embeds.shape[1]
        device = input_ids.device
        multimodal_indices = multimodal_indices.to(device)
        is_mm = torch.zeros(batch, dtype=torch.bool, device=device)
        is_mm[multimodal_indices] = True
        bos = attention_mask.int().argmax(dim=1)  # first attended position per row
        positions = torch.arange(length, device=device)[None, :]
        shift_mm = n * (positions > bos[:, None])
        shift_text = torch.full_like(shift_mm, n if pad_text_rows_left else 0)
        dest = positions + torch.where(is_mm[:, None], shift_mm, shift_text)  # [B, T] new index of each token

        total = length + n
        patch_pos = bos[multimodal_indices, None] + 1 + torch.arange(n, device=device)[None, :]  # [M, N]
        rows = multimodal_indices[:, None].expand(-1, n)
        fused = embeds.new_zeros(batch, total, embeds.shape[-1])
        fused = fused.scatter(1, dest[..., None].expand(-1, -1, embeds.shape[-1]), embeds)
        fused = fused.index_put((rows, patch_pos), patch_embeds.to(fused.dtype))
        mask = attention_mask.new_zeros(batch, total).scatter(1, dest, attention_mask)
        mask = mask.index_put((rows, patch_pos), torch.ones_like(patch_pos, dtype=torch.bool))
        fused_labels = None
        if labels is not None:  # patch positions and padding stay IGNORE
            fused_labels = labels.new_full((batch, total), IGNORE_INDEX).scatter(1, dest, labels)
        return Spliced(fused, mask, fused_labels)

    def fill_image_slots(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        patch_embeds: torch.Tensor | None,
        multimodal_indices: torch.Tensor,
        image_positions: torch.Tensor | None,
    ) -> Spliced:
        """The splice of a packed batch, whose rows already reserve each image's slots after its example's BOS:
        ``patch_embeds[m]`` goes to row ``multimodal_indices[m]`` from position ``image_positions[m]`` on (one
        vectorised write). The slots are never supervised."""
        embeds = self.llm_backbone.embed_input_ids(input_ids)
        attention_mask = attention_mask.bool()
        if patch_embeds is None or multimodal_indices.numel() == 0:
            return Spliced(embeds, attention_mask, labels)
        if image_positions is None or image_positions.numel() != multimodal_indices.numel():
            raise ValueError("a packed batch needs image_positions, one per image of multimodal_indices")
        n = patch_embeds.shape[1]
        device = input_ids.device
        rows = multimodal_indices.to(device)[:, None].expand(-1, n)
        slots = image_positions.to(device)[:, None] + torch.arange(n, device=device)[None, :]
        if int(slots.max()) >= input_ids.shape[1]:
            raise ValueError(f"an image's {n} slots run past the row's {input_ids.shape[1]} positions: was the batch "
                             f"packed for {n} image tokens (PrismVLM.num_image_tokens)?")
        embeds = embeds.index_put((rows, slots), patch_embeds.to(embeds.dtype))
        if labels is not None:
            labels = labels.index_put((rows, slots), torch.tensor(IGNORE_INDEX, device=device))
        return Spliced(embeds, attention_mask, labels)

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        pixel_values: PixelValues | None = None,
        multimodal_indices: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        sources: Sequence[str] | None = None,
        example_ids: torch.Tensor | None = None,
        image_positions: torch.Tensor | None = None,
        logits: bool = True,
    ) -> PrismVLMOutput:
        """``pixel_values`` holds the images of ``multimodal_indices`` rows only (all rows when the indices are
        None). With a non-empty ``past_key_values`` only new tokens are embedded (cached decoding); the mask must
        then cover the cached positions too. ``example_ids`` / ``image_positions`` come with a packed batch
        (``Batch``). ``logits=False`` (training) returns no logits: when the LLM backbone has an ``output_head`` the
        loss is computed from its final hidden states, chunk by chunk (``chunked_loss``)."""
        if past_key_values is not None and _cache_length(past_key_values) > 0:
            out = self.llm_backbone(
                inputs_embeds=self.llm_backbone.embed_input_ids(input_ids),
                attention_mask=attention_mask,
                past_key_values=past_key_values,
                use_cache=use_cache,
            )
            return PrismVLMOutput(logits=out.logits, past_key_values=_cache_of(out))

        multimodal_indices = _resolve_indices(input_ids, pixel_values, multimodal_indices)
        patch_embeds = None
        if multimodal_indices.numel() > 0:
            assert pixel_values is not None
            count = _num_images(pixel_values)
            if count != multimodal_indices.numel():
                raise ValueError(f"pixel_values holds {count} images but multimodal_indices names "
                                 f"{multimodal_indices.numel()} rows: pass images for the image rows only")
            patch_embeds = self.embed_images(pixel_values)
        llm_kwargs: dict[str, Any] = {}
        if example_ids is None:
            spliced = self.splice(input_ids, attention_mask, labels, patch_embeds, multimodal_indices)
        else:
            self._check_packing(use_cache or past_key_values is not None)
            spliced = self.fill_image_slots(input_ids, attention_mask, labels, patch_embeds, multimodal_indices,
                                            image_positions)
            example_ids = example_ids.to(input_ids.device)
            llm_kwargs = {"example_ids": example_ids, "position_ids": packed_position_ids(example_ids)}
        embeds = spliced.inputs_embeds
        if patch_embeds is None and self.keep_all_branches_in_graph:
            # Same collective calls on every rank (FSDP all-gathers, DDP buckets) even for a text-only micro-batch.
            dummy = self.embed_images(self._dummy_image_pixels())
            embeds = embeds + 0.0 * dummy.sum().to(embeds.dtype)

        head = None if logits or spliced.labels is None else getattr(self.llm_backbone, "output_head", None)
        if head is not None:
            llm_kwargs["logits"] = False
        out = self.llm_backbone(
            inputs_embeds=embeds,
            attention_mask=spliced.attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **llm_kwargs,
        )
        result = PrismVLMOutput(
            logits=None if head is not None else out.logits,
            past_key_values=_cache_of(out),
            attention_mask=spliced.attention_mask,
            labels=spliced.labels,
        )
        if spliced.labels is not None:
            if head is not None:
                result.loss_sum, result.num_tokens = chunked_loss(out.last_hidden_state, head, spliced.labels,
                                                                  example_ids, sources)
            else:
                result.loss_sum, result.num_tokens = _shifted_loss(out.logits, spliced.labels, sources, example_ids)
            result.loss = result.loss_sum / result.num_tokens
        return result

    def _check_packing(self, cached: bool) -> None:
        if not getattr(self.llm_backbone, "supports_packing", False):
            raise PackingNotSupportedError(
                f"{type(self.llm_backbone).__name__} cannot keep packed examples apart (it does not declare "
                "supports_packing): its attention would cross examples. Train with packing = false")
        if cached:
            raise ValueError("packed batches are for training: no KV cache")

    def forward_batch(self, batch: Batch, *, logits: bool = True) -> PrismVLMOutput:
        return self(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            labels=batch.labels,
            pixel_values=batch.pixel_values,
            multimodal_indices=batch.multimodal_indices,
            sources=batch.sources,
            example_ids=batch.example_ids,
            image_positions=batch.image_positions,
            logits=logits,
        )

    # -- prompting and generation (original API) ---------------------------------------------------------------
    def get_prompt_builder(self, system_prompt: str | None = None) -> PromptBuilder:
        return generation.prompt_builder(self, system_prompt)

    @torch.inference_mode()
    def generate(self, image: Image | None, prompt_text: str, **generate_kwargs: Any) -> str:
        """One (image, prompt) pair → the generated text (``image=None`` generates from text alone)."""
        pixels = None
        if image is not None:
            pixels = generation.add_batch_dim(self.vision_backbone.image_transform(image))
        return self.generate_batch(pixels, [prompt_text], **generate_kwargs)[0]

    @torch.inference_mode()
    def generate_batch(
        self,
        pixel_values: PixelValues | None,
        texts: list[str],
        return_string_probabilities: list[str] | None = None,
        **generate_kwargs: Any,
    ) -> list[str] | list[list[float]]:
        """Truly batched: one left-padded, KV-cached ``generate`` call for all rows (``pixel_values`` has one image
        per text, or is None). With ``return_string_probabilities`` returns, per row, the probabilities of those
        strings as answers, normalised to sum to 1."""
        if return_string_probabilities is not None:
            return generation.score_batch(self, pixel_values, texts, return_string_probabilities)
        return generation.generate_texts(self, pixel_values, texts, **generate_kwargs)

    @torch.inference_mode()
    def score(self, image: Image | None, prompt_text: str, candidates: list[str]) -> list[float]:
        """Normalised probabilities of ``candidates`` (multi-token allowed) as the answer to one prompt."""
        pixels = None if image is None else generation.add_batch_dim(self.vision_backbone.image_transform(image))
        return generation.score_batch(self, pixels, [prompt_text], candidates)[0]


def _cache_of(out: Any) -> Any:
    """The KV cache of an LLM output: ``.cache`` in newer transformers (``.past_key_values`` is deprecated there)."""
    if "cache" in getattr(out, "__dataclass_fields__", {}):
        return out.cache
    return getattr(out, "past_key_values", None)


def _cache_length(past_key_values: Any) -> int:
    if hasattr(past_key_values, "get_seq_length"):
        return int(past_key_values.get_seq_length())
    try:
        return int(past_key_values[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0


def _num_images(pixel_values: PixelValues) -> int:
    if isinstance(pixel_values, dict):
        sizes = {k: int(v.shape[0]) for k, v in pixel_values.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"fused pixel_values disagree on the number of images: {sizes}")
        return next(iter(sizes.values()))
    return int(pixel_values.shape[0])


def _resolve_indices(
    input_ids: torch.Tensor, pixel_values: PixelValues | None, multimodal_indices: torch.Tensor | None
) -> torch.Tensor:
    if pixel_values is None:
        if multimodal_indices is not None and multimodal_indices.numel() > 0:
            raise ValueError(f"multimodal_indices names {multimodal_indices.numel()} image rows but pixel_values "
                             "is None")
        return torch.zeros(0, dtype=torch.long, device=input_ids.device)
    if multimodal_indices is None:  # original semantics: every row has an image
        return torch.arange(input_ids.shape[0], device=input_ids.device)
    return multimodal_indices.to(device=input_ids.device, dtype=torch.long)


def packed_position_ids(example_ids: torch.Tensor) -> torch.Tensor:
    """Position ids that restart at 0 where each example (and the trailing padding) of a packed row begins."""
    length = example_ids.shape[1]
    index = torch.arange(length, device=example_ids.device).expand_as(example_ids)
    starts = torch.ones_like(example_ids, dtype=torch.bool)
    starts[:, 1:] = example_ids[:, 1:] != example_ids[:, :-1]
    return index - torch.where(starts, index, 0).cummax(dim=1).values


def _shifted_targets(labels: torch.Tensor, example_ids: torch.Tensor | None, sources: Sequence[str] | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token targets ``[B, T-1]`` (IGNORE where a packed row passes from one example to the next, so no label
    crosses) and their supervised count; ``NoSupervisedTokensError`` when there is none."""
    targets = labels[:, 1:]
    if example_ids is not None:
        targets = targets.masked_fill(example_ids[:, 1:] != example_ids[:, :-1], IGNORE_INDEX)
    num_tokens = (targets != IGNORE_INDEX).sum()
    if int(num_tokens) == 0:
        names = list(sources) if sources else [f"row {i}" for i in range(labels.shape[0])]
        raise NoSupervisedTokensError(
            f"every label in the batch is IGNORE ({IGNORE_INDEX}), so it has nothing to learn: {', '.join(names)} "
            "(were the answers truncated away, or is the data missing assistant turns?)"
        )
    return targets, num_tokens


def _shifted_loss(
    logits: torch.Tensor, labels: torch.Tensor, sources: Sequence[str] | None,
    example_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of next-token cross-entropy over supervised positions (computed in fp32)."""
    targets, num_tokens = _shifted_targets(labels, example_ids, sources)
    loss_sum = nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, num_tokens


def chunked_loss(
    hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, example_ids: torch.Tensor | None = None,
    sources: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_shifted_loss`` from the final hidden states ``[B, T, d]`` and the output ``head``, without ``[B, T, V]``
    logits: only supervised positions are projected, ``LOSS_CHUNK_ELEMENTS // vocab`` of them at a time, and each
    chunk's logits are recomputed in backward instead of kept (activation checkpointing), so peak memory holds one
    chunk's logits whatever B × T."""
    from torch.utils.checkpoint import checkpoint

    targets, num_tokens = _shifted_targets(labels, example_ids, sources)
    supervised = targets != IGNORE_INDEX
    states, wanted = hidden[:, :-1][supervised], targets[supervised]
    weight = getattr(head, "weight", None)
    vocab = getattr(head, "out_features", None) or (weight.shape[0] if weight is not None else 32768)
    chunk = max(1, LOSS_CHUNK_ELEMENTS // int(vocab))

    def chunk_loss(states: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(head(states).float(), wanted, reduction="sum")

    loss_sum = sum(checkpoint(chunk_loss, states[i : i + chunk], wanted[i : i + chunk], use_reentrant=False,
                              preserve_rng_state=False)
                   for i in range(0, states.shape[0], chunk))
    return loss_sum, num_tokens
