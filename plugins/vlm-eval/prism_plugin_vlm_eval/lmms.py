"""An lmms-eval model: ``lmms-eval --model prism --model_args pretrained=RUN_OR_MODEL --tasks ...``.

Registered through lmms-eval's ``lmms_eval.models`` entry-point group (``lmms_registration.manifest``), installed
with the ``lmms-eval`` extra of this plugin. Each lmms-eval context is wrapped as one human turn by the model's own
prompt builder (``<image>`` markers are dropped: the image goes after BOS, as everywhere in prism), with the first
image of the document (a prism model sees one image per prompt).

- ``generate_until``: one batched, KV-cached ``generate_batch`` call per ``batch_size`` requests that share their
  generation settings; greedy unless ``do_sample`` with a temperature > 0; the text is cut at the first ``until``
  string.
- ``loglikelihood``: for each continuation after its prompt (tokenized as prism tokenizes answers: after the prompt
  format's gap, in context), its mean negative log-likelihood per token and whether greedy decoding would produce
  it; one right-padded forward per batch. The negative log-likelihood, not the log-probability the base class's
  docstring names, is what lmms-eval's models return and what its ``multiple_choice`` scoring expects (it picks
  the choice with the smallest value).

The adapter runs in one process (``--model_args device=cuda`` or ``cpu``; default: the GPU when there is one).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance, unwrap_generation_output
from lmms_eval.api.model import lmms
from tqdm import tqdm

from prism_core.evaluation import load_model
from prism_core.prompting import answer_gap, continuation_ids, encode_prompt
from prism_core.types import IGNORE_INDEX
from prism_plugin_vlm_eval.prompts import prompt

_STRINGIFIES_PAIRS = isinstance(unwrap_generation_output((0.0, True))[0], str)


class PrismLMM(lmms):
    is_simple = True

    def __init__(self, pretrained: str, batch_size: int | str = 8, device: str | None = None,
                 max_new_tokens: int = 128, hf_token: str | None = None, **unused: Any) -> None:
        super().__init__()
        if str(batch_size).startswith("auto"):
            batch_size = 8
        self.vlm = load_model(pretrained, device=device, hf_token=hf_token)
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)
        self._warned_images = False
        for name in unused:
            if name not in ("max_batch_size",):
                warnings.warn(f"prism lmms-eval model: ignoring model_args {name!r}", stacklevel=2)

    @property
    def device(self) -> torch.device:
        return self.vlm.device

    # -- inputs --------------------------------------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _pixels(self, doc_to_visual: Any, doc: Any) -> Any:
        visuals = doc_to_visual(doc) if doc_to_visual is not None else None
        visuals = [v for v in (visuals or []) if v is not None]
        if not visuals:
            return None
        if len(visuals) > 1 and not self._warned_images:
            warnings.warn("prism models see one image per prompt: using each document's first image", stacklevel=2)
            self._warned_images = True
        return self.vlm.image_transform(visuals[0].convert("RGB"))

    def _prompt(self, context: str) -> str:
        return prompt(self.vlm, context)

    # -- generation ----------------------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        bar = tqdm(total=len(requests), desc="prism generating", disable=self.rank != 0)
        for indices in groups.values():
            settings = dict(requests[indices[0]].args[1])
            until = settings.pop("until", None)
            until = [until] if isinstance(until, str) else list(until or [])
            kwargs: dict[str, Any] = {"max_new_tokens": int(settings.get("max_new_tokens") or self.max_new_tokens)}
            temperature = float(settings.get("temperature") or 0)
            if settings.get("do_sample") and temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_p=float(settings.get("top_p") or 1.0))
            else:
                kwargs["do_sample"] = False
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                prompts, pixels = [], []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    prompts.append(self._prompt(context))
                    pixels.append(self._pixels(doc_to_visual, self._doc(task, split, doc_id)))
                with torch.inference_mode():
                    texts = self.vlm.generate_batch(pixels, prompts, **kwargs)
                for i, text in zip(chunk, texts, strict=True):
                    results[i] = _cut(text, until)
                bar.update(len(chunk))
        bar.close()
        return [r if r is not None else "" for r in results]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the prism lmms-eval model answers single-round tasks (generate_until and "
                                  "loglikelihood)")

    # -- log-likelihood ------------------------------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Instance]) -> list[Any]:
        out: list[Any] = []
        tokenizer = self.vlm.tokenizer
        gap = answer_gap(self.vlm.prompt_format) if self.vlm.prompt_format is not None else ""
        bar = tqdm(total=len(requests), desc="prism log-likelihood", disable=self.rank != 0)
        for start in range(0, len(requests), self.batch_size):
            rows, labels, pixels = [], [], []
            for request in requests[start:start + self.batch_size]:
                context, target, doc_to_visual, doc_id, task, split = request.args
                doc = self._doc(task, split, doc_id)
                continuation = target if isinstance(target, str) else target(doc)
                text = self._prompt(context)
                prompt_ids = encode_prompt(tokenizer, text)
                answer = continuation_ids(tokenizer, prompt_ids, text, gap + str(continuation).lstrip())
                if answer is None:  # the tokenizer merges across the boundary: the answer on its own
                    answer = tokenizer(str(continuation).lstrip(), add_special_tokens=False).input_ids
                if not answer:
                    raise ValueError(f"{task} document {doc_id}: the continuation {continuation!r} has no tokens")
                rows.append(prompt_ids + answer)
                labels.append([IGNORE_INDEX] * len(prompt_ids) + answer)
                pixels.append(self._pixels(doc_to_visual, doc))
            out.extend(self._score_rows(rows, labels, pixels))
            bar.update(len(rows))
        bar.close()
        return [_as_response(pair) for pair in out]

    @torch.inference_mode()
    def _score_rows(self, rows: Sequence[list[int]], labels: Sequence[list[int]],
                    pixels: Sequence[Any]) -> list[tuple[float, bool]]:
        """Mean -log p(label token) per row and whether every label token is the argmax, from one forward."""
        device, pad = self.device, self.vlm.tokenizer.pad_token_id
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        label_ids = torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in labels], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device).bool()
        image_rows = [i for i, p in enumerate(pixels) if p is not None]
        pixel_values = _stack([pixels[i] for i in image_rows]) if image_rows else None
        output = self.vlm(input_ids=input_ids, attention_mask=mask, labels=label_ids, pixel_values=pixel_values,
                          multimodal_indices=torch.tensor(image_rows, dtype=torch.long, device=device))
        targets = output.labels[:, 1:]
        log_probs = torch.log_softmax(output.logits[:, :-1].float(), dim=-1)
        supervised = targets != IGNORE_INDEX
        picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        greedy = (log_probs.argmax(dim=-1) == targets) | ~supervised
        mean_nll = -torch.where(supervised, picked, 0.0).sum(dim=1) / supervised.sum(dim=1)
        return [(float(nll), bool(all_greedy)) for nll, all_greedy in zip(mean_nll, greedy.all(dim=1), strict=True)]


def _as_response(pair: tuple[float, bool]) -> Any:
    """``(value, is_greedy)`` as lmms-eval's evaluator will pass it on to the task. lmms-eval 0.7 turns every
    response that is not text into its ``str()`` (``unwrap_generation_output``), which breaks ``multiple_choice``
    for every model; its ``GenerationResult`` wrapper passes its ``text`` on untouched, so the pair goes in one
    there, and only while the installed version needs it."""
    if _STRINGIFIES_PAIRS:
        return GenerationResult(text=pair)  # type: ignore[arg-type]
    return pair


def _stack(items: Sequence[Any]) -> Any:
    if isinstance(items[0], dict):
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}
    return torch.stack(list(items))


def _cut(text: str, until: Sequence[str]) -> str:
    """The text up to the first stop string."""
    ends = [text.find(stop) for stop in until if stop and stop in text]
    return text[:min(ends)] if ends else text
