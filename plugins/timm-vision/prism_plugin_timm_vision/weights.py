"""Where a timm backbone's weights come from: the local Hugging Face cache, the hub, or a safetensors file.

Weights are always read with safetensors (never unpickled; memory-mapped) and checked strictly: a file that does
not fit the model fails naming the file and the mismatched keys. Offline with the weights missing fails at once with the
command that fetches them, instead of waiting on a hub timeout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

HUB_FILENAME = "model.safetensors"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable (offline), or a weights file is missing."""


class WeightsMismatchError(RuntimeError):
    """A weights file does not fit the model built from the spec."""


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_is_offline() -> bool:
    from huggingface_hub import constants

    return _truthy("HF_HUB_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hub_repo_for(timm_name: str) -> str:
    """The Hugging Face repo holding timm's pretrained weights for ``timm_name`` (tag included)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None or not cfg.hf_hub_id:
        tags = timm.list_pretrained(timm_name.split(".")[0] + "*")
        raise WeightsUnavailableError(
            f"timm has no Hugging Face weights for {timm_name!r} (pretrained tags: {', '.join(tags) or 'none'}); "
            f"name one of those tags, or set weights to a .safetensors file or 'random'")
    return cfg.hf_hub_id


def pretrained_weights_file(timm_name: str) -> Path:
    """Path of timm's pretrained weights for ``timm_name``: from the cache, else downloaded (unless offline)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repo = hub_repo_for(timm_name)
    cached = try_to_load_from_cache(repo, HUB_FILENAME, cache_dir=hub_cache_dir())
    if isinstance(cached, str):
        return Path(cached)
    if hub_is_offline():
        raise WeightsUnavailableError(
            f"pretrained weights for timm model {timm_name!r} are not in the Hugging Face cache "
            f"({hub_cache_dir()}) and HF_HUB_OFFLINE is set. Fetch them on a machine with network access:\n"
            f"    hf download {repo} {HUB_FILENAME}    (or: huggingface-cli download {repo})\n"
            f"then copy the cache here, or set the spec's weights to the path of that {HUB_FILENAME}.")
    return Path(hf_hub_download(repo, HUB_FILENAME, cache_dir=hub_cache_dir()))


def read_weights_file(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A timm-format safetensors state dict for ``model`` (which may be on meta), memory-mapped, checked strictly
    and adapted as timm's loader would.

    timm's checkpoint filter of the model's family resamples position embeddings to the spec's image size (DINOv2
    was trained at 518 px) and converts OpenAI CLIP layouts; classifier-head weights are dropped (features only).
    Tensors the filter leaves alone stay views of the mapped file: nothing is copied until they are used.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        state_dict = load_file(str(path))  # memory-mapped
    except Exception as exc:  # safetensors raises several types for a corrupt header
        raise WeightsMismatchError(f"{path}: not a readable safetensors file ({exc})") from exc
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state_dict = filter_fn(state_dict, model)
        except Exception as exc:
            raise WeightsMismatchError(f"{path}: cannot adapt to {type(model).__name__}: {exc}") from exc
    expected = model.state_dict()
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "head"
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state_dict = {k: v for k, v in state_dict.items()
                  if k in expected or not k.startswith(tuple(f"{h}." for h in heads))}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong_shape:
        details = [f"{label}: {', '.join(keys[:6])}{' …' if len(keys) > 6 else ''}"
                   for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                   if keys]
        raise WeightsMismatchError(f"{path} does not fit the model ({'; '.join(details)})")
    return state_dict
