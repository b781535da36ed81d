"""Pretrained weights of an LLM as a state dict, memory-mapped from model_id's files, fitted to the prism model.

The state is read lazily (safetensors are memory-mapped; legacy ``pytorch_model.bin`` files go through
``torch.load(weights_only=True, mmap=True)``), so materialising a model from it assigns the mapped tensors or, under
FSDP, copies only this rank's rows: every rank of a node maps the same files and the page cache holds them once.
The vocabulary rows are fitted to the model's (PAD added, padded to a multiple of 64): extra rows are drawn like
Hugging Face's ``_init_weights`` draws embeddings (normal, ``initializer_range``), as the original's
``resize_token_embeddings`` did, seeded by ``init_seed`` and the key. A checkpoint whose keys transformers would
have to convert falls back to ``from_pretrained`` (one full copy, then the same fitting).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prism_plugin_hf_llm.loading import LLMLoadError, explained_hub_errors, resolve_source, resolve_token

if TYPE_CHECKING:
    from prism_plugin_hf_llm.spec import HFCausalLMSpec

#: (single file, index of shards), in the order transformers prefers them.
CHECKPOINT_LAYOUTS = (("model.safetensors", "model.safetensors.index.json"),
                      ("pytorch_model.bin", "pytorch_model.bin.index.json"))


def checkpoint_files(spec: HFCausalLMSpec, source: str) -> list[Path]:
    """The weight files of ``source`` (a local directory or a hub id, downloaded unless cached)."""
    from transformers.utils import cached_file

    token = resolve_token(spec.token_file)

    def find(filename: str) -> Path | None:
        with explained_hub_errors(spec, source):
            found = cached_file(source, filename, revision=spec.revision, token=token,
                                _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        return Path(found) if found else None

    for single, index in CHECKPOINT_LAYOUTS:
        if (file := find(single)) is not None:
            return [file]
        if (index_file := find(index)) is not None:
            shards = sorted(set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values()))
            files = [find(shard) for shard in shards]
            absent = [s for s, f in zip(shards, files, strict=True) if f is None]
            if absent:
                raise LLMLoadError(f"{spec.name}: {index_file} lists shard(s) that cannot be found: {absent[:3]}")
            return [f for f in files if f is not None]
    raise LLMLoadError(f"{spec.name}: no weights in {source} (looked for "
                       f"{', '.join(name for layout in CHECKPOINT_LAYOUTS for name in layout)})")


def _read(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))  # memory-mapped
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise LLMLoadError(f"{file}: cannot read it as a weights-only checkpoint: {exc}") from exc


def _with_base_prefix(state: dict[str, torch.Tensor], model: nn.Module, expected: set[str]) -> dict[str, Any]:
    """A checkpoint of the base model (``layers.0...``) for a causal LM (``model.layers.0...``)."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or any(key in expected for key in state):
        return state
    return {f"{prefix}.{k}" if f"{prefix}.{k}" in expected else k: v for k, v in state.items()}


def vocabulary_keys(model: nn.Module) -> list[str]:
    """State-dict keys whose first dimension is the vocabulary: input and output embeddings (and an output bias)."""
    names = {id(m): n for n, m in model.named_modules()}
    keys = []
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None and id(module) in names:
            keys += [f"{names[id(module)]}.{p}" for p, t in module.named_parameters(recurse=False) if t is not None]
    return keys


def fit_rows(value: torch.Tensor, rows: int, *, std: float, seed: int) -> torch.Tensor:
    """``value`` cut or extended to ``rows`` along dim 0; new embedding rows ~ N(0, std), new bias entries 0."""
    if value.shape[0] >= rows:
        return value[:rows]
    extra = torch.zeros((rows - value.shape[0], *value.shape[1:]), dtype=value.dtype)
    if value.ndim > 1:
        extra.normal_(0.0, std, generator=torch.Generator().manual_seed(seed))
    return torch.cat([value, extra])


def pretrained_state(spec: HFCausalLMSpec, model: nn.Module, source: str | None = None) -> Mapping[str, Any]:
    """``model``'s state (keys as ``model.state_dict()``, which may be on meta) from model_id's weights."""
    from prism_core.materialize import check_state_keys, seed_for

    if source is None:
        assert spec.model_id is not None, "checked by problems()"
        source = resolve_source(spec, spec.model_id, need_weights=True)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    for file in checkpoint_files(spec, source):
        state.update(_read(file))
    state = _with_base_prefix(state, model, set(expected))
    if check_state_keys(model, state) is not None:
        state = _converted_by_transformers(spec, source)
    std = float(getattr(model.config, "initializer_range", None) or 0.02)
    for key in vocabulary_keys(model):
        if key in state and state[key].shape[0] != expected[key][0]:
            state[key] = fit_rows(state[key], expected[key][0], std=std, seed=seed_for(spec.init_seed, key))
    mismatch = check_state_keys(model, state)
    shapes = [k for k in state if k in expected and tuple(state[k].shape) != expected[k]]
    if mismatch is not None or shapes:
        raise LLMLoadError(f"{spec.name}: the weights of {source} do not fit the model its config describes: "
                           f"{mismatch or ''}{'; wrong shape: ' + ', '.join(shapes[:5]) if shapes else ''}")
    return state


def _converted_by_transformers(spec: HFCausalLMSpec, source: str) -> dict[str, torch.Tensor]:
    """The state ``from_pretrained`` produces (it renames legacy layouts): one full copy in memory."""
    from transformers import AutoModelForCausalLM

    from prism_plugin_hf_llm.loading import _torch_dtype

    with explained_hub_errors(spec, source):
        loaded = AutoModelForCausalLM.from_pretrained(source, revision=spec.revision, dtype=_torch_dtype(spec),
                                                      token=resolve_token(spec.token_file))
    return dict(loaded.state_dict())
