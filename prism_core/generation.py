"""Batched generation and answer scoring for ``PrismVLM``.

Generation tokenizes each prompt (BOS added), left-pads the batch, splices each image's tokens (as many as the
projector makes: ``PrismVLM.num_image_tokens``) after its row's BOS and makes one KV-cached
``llm_backbone.generate`` call for all rows, so rows stop at their own EOS. Scoring returns the
probability of each candidate answer, normalised over the candidates (multi-token candidates are scored by their
joint probability under teacher forcing; single-token ones from one forward pass, as the original does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from prism_core.types import IGNORE_INDEX

if TYPE_CHECKING:
    from prism_core.prompting import PromptBuilder
    from prism_core.types import PixelValues
    from prism_core.vlm import PrismVLM

def add_batch_dim(pixels: PixelValues) -> PixelValues:
    if isinstance(pixels, dict):
        return {k: v[None] for k, v in pixels.items()}
    return pixels[None]


def _stack(items: Sequence[PixelValues]) -> PixelValues:
    if isinstance(items[0], dict):
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}  # type: ignore[index]
    return torch.stack(list(items))  # type: ignore[arg-type]


def _select_rows(pixel_values: Any, num_rows: int, device: torch.device) -> tuple[PixelValues | None, torch.Tensor]:
    """Normalise the accepted pixel layouts to (image-row pixels, multimodal row indices): one batched
    tensor/dict with an image per row, None for text only, or a list with one entry per row (None: no image)."""
    if pixel_values is None:
        return None, torch.zeros(0, dtype=torch.long, device=device)
    if isinstance(pixel_values, (list, tuple)):
        if len(pixel_values) != num_rows:
            raise ValueError(f"got {len(pixel_values)} pixel entries for {num_rows} prompts")
        rows = [i for i, p in enumerate(pixel_values) if p is not None]
        if not rows:
            return None, torch.zeros(0, dtype=torch.long, device=device)
        return _stack([pixel_values[i] for i in rows]), torch.tensor(rows, device=device)
    from prism_core.vlm import _num_images

    count = _num_images(pixel_values)
    if count != num_rows:
        raise ValueError(f"pixel_values holds {count} images for {num_rows} prompts (one image per prompt)")
    return pixel_values, torch.arange(num_rows, device=device)


def _pad(rows: Sequence[Sequence[int]], pad_value: int, left: bool, device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = [([pad_value] * (width - len(r)) + list(r)) if left else (list(r) + [pad_value] * (width - len(r)))
              for r in rows]
    return torch.tensor(padded, dtype=torch.long, device=device)


def _tokenize_prompts(vlm: PrismVLM, texts: Sequence[str]) -> list[list[int]]:
    from prism_core.prompting import encode_prompt

    if isinstance(texts, str):
        raise TypeError("texts must be a list of prompts, not a single string")
    if not texts:
        raise ValueError("no prompts given")
    return [encode_prompt(vlm.llm_backbone.tokenizer, text) for text in texts]


def generate_ids(vlm: PrismVLM, pixel_values: Any, texts: Sequence[str], **generate_kwargs: Any) -> torch.Tensor:
    """New token ids ``[B, new]`` (pad after each row's EOS) for a batch of prompts."""
    device = vlm.device
    prompt_ids = _tokenize_prompts(vlm, texts)
    pad_id = vlm.llm_backbone.tokenizer.pad_token_id
    input_ids = _pad(prompt_ids, pad_id, left=True, device=device)
    attention_mask = _pad([[1] * len(r) for r in prompt_ids], 0, left=True, device=device).bool()
    pixels, multimodal_indices = _select_rows(pixel_values, len(prompt_ids), device)
    patch_embeds = None if pixels is None else vlm.embed_images(pixels)
    spliced = vlm.splice(input_ids, attention_mask, None, patch_embeds, multimodal_indices, pad_text_rows_left=True)
    return vlm.llm_backbone.generate(
        inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, **generate_kwargs
    )


def generate_texts(vlm: PrismVLM, pixel_values: Any, texts: Sequence[str], **generate_kwargs: Any) -> list[str]:
    new_ids = generate_ids(vlm, pixel_values, texts, **generate_kwargs)
    tokenizer = vlm.llm_backbone.tokenizer
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_ids.tolist()]


def score_batch(
    vlm: PrismVLM, pixel_values: Any, texts: Sequence[str], candidates: Sequence[str]
) -> list[list[float]]:
    """Per prompt, the probability of each candidate answer, normalised to sum to 1 over ``candidates``."""
    if not candidates:
        raise ValueError("return_string_probabilities needs at least one candidate string")
    prompt_ids = _tokenize_prompts(vlm, texts)
    candidate_ids = [_answer_ids(vlm, text, ids, candidates) for text, ids in zip(texts, prompt_ids, strict=True)]
    empty = sorted({c for row in candidate_ids for c, ids in zip(candidates, row, strict=True) if not ids})
    if empty:
        raise ValueError(f"candidate strings tokenize to nothing: {empty}")
    device = vlm.device
    pixels, multimodal_indices = _select_rows(pixel_values, len(prompt_ids), device)
    patch_embeds = None if pixels is None else vlm.embed_images(pixels)
    if all(len(ids) == 1 for row in candidate_ids for ids in row):
        log_probs = _single_token_log_probs(vlm, prompt_ids, patch_embeds, multimodal_indices, candidate_ids)
    else:
        log_probs = _teacher_forced_log_probs(vlm, prompt_ids, patch_embeds, multimodal_indices, candidate_ids)
    return torch.softmax(log_probs, dim=-1).tolist()


def _answer_ids(vlm: PrismVLM, text: str, prompt_ids: list[int], candidates: Sequence[str]) -> list[list[int]]:
    """Each candidate's ids as an answer after ``text``: tokenized in context, after the prompt format's gap, as
    training tokenized answers (``▁Yes`` on SentencePiece, ``ĠYes`` on GPT-2 BPE); stand-alone where the
    tokenizer merges across the boundary."""
    from prism_core.prompting import answer_gap, continuation_ids

    tokenizer = vlm.llm_backbone.tokenizer
    gap = answer_gap(vlm.prompt_format) if vlm.prompt_format is not None else ""
    out = []
    for candidate in candidates:
        ids = continuation_ids(tokenizer, prompt_ids, text, gap + candidate)
        out.append(ids if ids is not None else tokenizer(candidate, add_special_tokens=False).input_ids)
    return out


def _single_token_log_probs(
    vlm: PrismVLM,
    prompt_ids: list[list[int]],
    patch_embeds: torch.Tensor | None,
    multimodal_indices: torch.Tensor,
    candidate_ids: list[list[list[int]]],
) -> torch.Tensor:
    device = vlm.device
    logits, spliced = _right_padded_forward(vlm, prompt_ids, None, patch_embeds, multimodal_indices)
    last = _last_attended(spliced.attention_mask)
    next_logits = logits[torch.arange(len(prompt_ids), device=device), last].float()
    ids = torch.tensor([[c[0] for c in row] for row in candidate_ids], device=device)
    return torch.log_softmax(next_logits, dim=-1).gather(1, ids)


def _right_padded_forward(
    vlm: PrismVLM,
    rows: list[list[int]],
    labels: list[list[int]] | None,
    patch_embeds: torch.Tensor | None,
    multimodal_indices: torch.Tensor,
) -> tuple[torch.Tensor, Any]:
    """Right-pad token rows (and labels), splice the images in, and run the LLM: (logits, the spliced batch)."""
    device = vlm.device
    input_ids = _pad(rows, vlm.llm_backbone.tokenizer.pad_token_id, left=False, device=device)
    label_ids = None if labels is None else _pad(labels, IGNORE_INDEX, left=False, device=device)
    mask = _pad([[1] * len(r) for r in rows], 0, left=False, device=device).bool()
    spliced = vlm.splice(input_ids, mask, label_ids, patch_embeds, multimodal_indices)
    logits = vlm.llm_backbone(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask).logits
    return logits, spliced


def _last_attended(mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
    return torch.where(mask, positions, -1).max(dim=1).values


def _teacher_forced_log_probs(
    vlm: PrismVLM,
    prompt_ids: list[list[int]],
    patch_embeds: torch.Tensor | None,
    multimodal_indices: torch.Tensor,
    candidate_ids: list[list[list[int]]],
) -> torch.Tensor:
    """Sum of log p(candidate tokens | prompt) per (prompt, candidate), as ``[num_prompts, num_candidates]``."""
    device = vlm.device
    num_candidates = len(candidate_ids[0])
    rows, labels = [], []
    for prompt, answers in zip(prompt_ids, candidate_ids, strict=True):
        for answer in answers:
            rows.append(prompt + answer)
            labels.append([IGNORE_INDEX] * len(prompt) + answer)
    # Each prompt's image rows repeat once per candidate; the vision tower ran once per image.
    repeated = multimodal_indices.repeat_interleave(num_candidates) * num_candidates + torch.arange(
        num_candidates, device=device
    ).repeat(multimodal_indices.numel())
    patches = None if patch_embeds is None else patch_embeds.repeat_interleave(num_candidates, dim=0)
    logits, spliced = _right_padded_forward(vlm, rows, labels, patches, repeated)
    assert spliced.labels is not None
    targets = spliced.labels[:, 1:]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    per_row = torch.where(targets != IGNORE_INDEX, picked, 0.0).sum(dim=1)
    return per_row.view(len(prompt_ids), num_candidates)


def prompt_builder(vlm: PrismVLM, system_prompt: str | None = None) -> PromptBuilder:
    """The original ``get_prompt_builder``: a builder over the model's prompt format (optionally with another
    system prompt, for formats that have one)."""
    from prism_core.prompting import PromptBuilder

    prompt_format = vlm.prompt_format
    if prompt_format is None:
        raise RuntimeError(
            "this model has no prompt format: install the plugin providing the LLM's default prompt format "
            f"({getattr(vlm.llm_backbone, 'default_prompt_format', '?')!r}) or set model.prompt_format in the spec"
        )
    if system_prompt is not None and _has_system_prompt(vlm.prompt_format_spec):
        import attrs

        spec = attrs.evolve(vlm.prompt_format_spec, system_prompt=system_prompt)
        prompt_format = spec.build(tokenizer=vlm.llm_backbone.tokenizer)
    return PromptBuilder(prompt_format)


def _has_system_prompt(spec: Any) -> bool:
    """Formats without one take ``system_prompt`` and ignore it, as the original builders do (the evaluation
    harness passes it to every model)."""
    import attrs

    return spec is not None and "system_prompt" in {f.name for f in attrs.fields(type(spec))}
