"""Load released Prismatic VLMs from the original layout: ``config.json`` + ``checkpoints/latest-checkpoint.pt``.

The checkpoint holds ``{"model": {"projector": {...}, "llm_backbone": {...}[, "vision_backbone": {...}]}}``; the
vision weights of frozen-backbone runs come from timm (the vision plugin's pretrained weights). Every checkpoint key
is mapped onto a key of the composed prism model (``map_keys``); a key that maps nowhere, a prism parameter left
without a value, or a shape that differs is an error naming it. The ``.pt`` file is read with
``torch.load(weights_only=True)`` only: it is never unpickled as arbitrary Python.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prism_plugin_prismatic.catalog import HUB_REPO, MODELS
from prism_plugin_prismatic.recipes import VISION_RESIZE_FIELD, llm_kind, projector_kind, vision_kind

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoints/latest-checkpoint.pt"
#: Checkpoint component → attribute of PrismVLM holding it.
COMPONENTS = {"vision_backbone": "vision_backbone", "projector": "projector", "llm_backbone": "llm_backbone"}


class PrismaticLoadError(RuntimeError):
    """A released model could not be found, downloaded or mapped; the message says what to do."""


# -- files ----------------------------------------------------------------------------------------------------------
def _catalog_id(name_or_id: str) -> str | None:
    for model_id, entry in MODELS.items():
        if name_or_id == model_id or name_or_id in entry["names"]:
            return model_id
    return None


def resolve_files(path_or_id: str | Path, hf_token: str | None = None, cache_dir: str | None = None,
                  repo_id: str = HUB_REPO) -> tuple[Path, Path]:
    """``(config.json, latest-checkpoint.pt)`` for a run directory, or a model id / alias downloaded from the Hub."""
    path = Path(path_or_id)
    if path.is_dir():
        config, checkpoint = path / CONFIG_FILE, path / CHECKPOINT_FILE
        for needed in (config, checkpoint):
            if not needed.is_file():
                raise PrismaticLoadError(f"{path}: not an original Prismatic run directory ({needed} is missing)")
        return config, checkpoint
    model_id = _catalog_id(str(path_or_id))
    if model_id is None:
        raise PrismaticLoadError(
            f"{path_or_id!r} is neither a directory nor a released Prismatic model id or name "
            f"(prism_core.available_model_names() lists them)"
        )
    return _download(model_id, CONFIG_FILE, hf_token, cache_dir, repo_id), _download(
        model_id, CHECKPOINT_FILE, hf_token, cache_dir, repo_id
    )


def _download(model_id: str, filename: str, token: str | None, cache_dir: str | None, repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    where = f"{repo_id}/{model_id}/{filename}"
    try:
        return Path(hf_hub_download(repo_id, f"{model_id}/{filename}", token=token, cache_dir=cache_dir))
    except GatedRepoError as exc:
        raise PrismaticLoadError(f"{where} is gated: accept its terms on the Hub and pass hf_token= "
                                 f"(or set HF_TOKEN)") from exc
    except RepositoryNotFoundError as exc:
        raise PrismaticLoadError(f"{where}: repository not found or not visible without a token "
                                 f"(pass hf_token= or set HF_TOKEN)") from exc
    except LocalEntryNotFoundError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "HF_HUB_OFFLINE is set and the file is not in the local cache" if offline else (
            "it is not in the local cache and the Hub could not be reached")
        raise PrismaticLoadError(
            f"{where}: {why}; download it first with `huggingface-cli download {repo_id} {model_id}/{filename}` "
            f"or pass a local run directory") from exc
    except EntryNotFoundError as exc:
        raise PrismaticLoadError(f"{where}: no such file in the repository") from exc
    except HfHubHTTPError as exc:
        raise PrismaticLoadError(f"{where}: download failed: {exc}") from exc


# -- config → spec --------------------------------------------------------------------------------------------------
def read_config(config_path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PrismaticLoadError(f"{config_path}: cannot read the run config: {exc}") from exc
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict):
        raise PrismaticLoadError(f"{config_path}: expected a top-level 'model' table")
    missing = [k for k in ("vision_backbone_id", "llm_backbone_id", "arch_specifier", "image_resize_strategy")
               if not isinstance(model.get(k), str)]
    if missing:
        raise PrismaticLoadError(f"{config_path}: model.{missing[0]} is missing or not a string")
    return model


def _kind_for_preset(role: str, preset: str, fallback: Any) -> str:
    """The installed kind that defines ``preset`` (so test presets such as ``siglip-tiny`` resolve too)."""
    from prism_core.registry import get_registry
    from prism_core.types import Role

    matches = get_registry().find_preset(Role(role), preset)
    return matches[0] if len(matches) == 1 else fallback(preset)


def _resize_field(kind: str) -> str | None:
    import attrs

    from prism_core.registry import get_registry
    from prism_core.types import Role

    names = {f.name for f in attrs.fields(get_registry().resolve(Role.VISION_BACKBONE, kind))}
    # a kind without resize choices (test fakes) takes the images as its transform makes them
    return VISION_RESIZE_FIELD if VISION_RESIZE_FIELD in names else None


def model_spec_from_config(model_cfg: Mapping[str, Any], vision_overrides: Mapping[str, Any] | None = None,
                           llm_overrides: Mapping[str, Any] | None = None) -> Any:
    """The prism ``ModelSpec`` equivalent to an original run config's ``model`` table."""
    from prism_core.spec import ModelSpec, SpecError, structure

    vid, lid = model_cfg["vision_backbone_id"], model_cfg["llm_backbone_id"]
    try:
        vkind = _kind_for_preset("vision_backbones", vid, vision_kind)
    except ValueError as exc:
        raise PrismaticLoadError(f"config.json: model.vision_backbone_id: {exc}") from exc
    lkind = _kind_for_preset("llm_backbones", lid, llm_kind)
    vision: dict[str, Any] = {"kind": vkind, "preset": vid}
    resize = _resize_field(vkind)
    if resize:
        vision[resize] = model_cfg["image_resize_strategy"]
    vision.update(vision_overrides or {})
    llm = {"kind": lkind, "preset": lid, **(llm_overrides or {})}
    try:
        table = {"vision": vision, "llm": llm, "projector": {"kind": projector_kind(model_cfg["arch_specifier"])}}
        return structure(table, ModelSpec, "config.json")
    except (SpecError, ValueError) as exc:
        raise PrismaticLoadError(f"config.json does not describe a model prism can build:\n{exc}") from exc


# -- key mapping ----------------------------------------------------------------------------------------------------
def _strip(key: str) -> Iterable[str]:
    """``a.b.c`` → ``a.b.c``, ``b.c``, ``c``: shorter and shorter suffixes to look up — but never past an index
    (``featurizer.blocks.23.norm1.weight`` stops at ``blocks.23.norm1.weight``: ``norm1.weight`` of block 23 is not
    "any ``norm1.weight``")."""
    parts = key.split(".")
    for i in range(len(parts)):
        if i and parts[i - 1].isdigit():
            return
        if not parts[i].isdigit():
            yield ".".join(parts[i:])


def _stem(key: str) -> str:
    """``dino_featurizer.blocks.0.x`` → ``dino``: the member an original fused-backbone key belongs to."""
    return key.split(".")[0].split("_")[0]


def map_keys(component: str, source: Mapping[str, tuple[int, ...]], target: Mapping[str, tuple[int, ...]],
             ignorable: Any = None) -> dict[str, str]:
    """Map original checkpoint keys of one component onto prism keys of the same module.

    A key maps to the prism key equal to it, or else to the only prism key that ends with it once the original's
    wrapper prefixes are dropped (``llm.model.layers.0...`` → ``...model.layers.0...``); between several candidates,
    the one whose path mentions the original's prefix wins (``dino_featurizer.blocks.0`` → the ``dino`` member).
    Raises ``PrismaticLoadError`` listing unmapped, unfilled and mismatched keys.
    """
    by_suffix: dict[str, list[str]] = {}
    components: set[str] = set()
    for key in target:
        parts = key.split(".")
        components.update(parts)
        for i in range(len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), []).append(key)
    mapping: dict[str, str] = {}
    unmapped, ambiguous = [], []
    for key in source:
        found: str | None = key if key in target else None
        if found is None and ignorable and ignorable(key):
            continue
        stem = _stem(key)
        for suffix in () if found else _strip(key):
            candidates = by_suffix.get(suffix, [])
            if stem in components:  # the original's prefix names a prism member: stay inside that member
                candidates = [c for c in candidates if stem in c[: len(c) - len(suffix)].split(".")]
            if len(candidates) == 1:
                found = candidates[0]
                break
            if len(candidates) > 1:
                ambiguous.append(f"{key} → {', '.join(candidates[:3])}")
                break
        if found is None:
            unmapped.append(key)
        else:
            mapping[key] = found
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} checkpoint key(s) match no prism parameter, e.g. {', '.join(unmapped[:5])}")
    if ambiguous:
        problems.append(f"{len(ambiguous)} checkpoint key(s) match several prism parameters: "
                        f"{'; '.join(ambiguous[:3])}")
    counts: dict[str, int] = {}
    for t in mapping.values():
        counts[t] = counts.get(t, 0) + 1
    twice = [t for t, n in counts.items() if n > 1]
    if twice:
        problems.append(f"prism parameter(s) filled twice: {', '.join(twice[:5])}")
    unfilled = sorted(set(target) - set(mapping.values()))
    if unfilled:
        problems.append(f"{len(unfilled)} prism parameter(s) get no value, e.g. {', '.join(unfilled[:5])}")
    shapes = [f"{s} {tuple(source[s])} vs prism {t} {tuple(target[t])}" for s, t in mapping.items()
              if tuple(source[s]) != tuple(target[t])]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:3])}")
    if problems:
        raise PrismaticLoadError(f"checkpoint component {component!r}: " + "; ".join(problems))
    return mapping


def _pruned_vision_key(target: Mapping[str, Any]) -> Any:
    """Full-finetune checkpoints hold every ViT block, the final norm and head; prism stops at the feature block
    (the original computed the last block and threw it away), so those weights are legitimately unused. Depths are
    per tower: a fused backbone's DINOv2 (24 blocks) and SigLIP (27 blocks) keep different blocks."""
    import re

    kept: dict[str, int] = {}  # prism path before "blocks.N" → last kept block
    for key in target:
        match = re.search(r"(^|.*\.)blocks\.(\d+)\.", key)
        if match:
            kept[match.group(1)] = max(kept.get(match.group(1), -1), int(match.group(2)))

    def ignorable(key: str) -> bool:
        block = re.search(r"blocks\.(\d+)\.", key)
        if block is None:
            return re.search(r"(^|\.)(norm|fc_norm|head|attn_pool)\.", key) is not None
        stem = _stem(key)
        owners = [last for owner, last in kept.items() if stem in owner.split(".")] or list(kept.values())
        return bool(owners) and all(int(block.group(1)) > last for last in owners)

    return ignorable


def map_checkpoint(vlm: Any, state: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{attribute: {prism key: tensor}}`` for every component present in the checkpoint's ``model`` table."""
    out: dict[str, dict[str, Any]] = {}
    for component, tensors in state.items():
        attribute = COMPONENTS.get(component)
        if attribute is None:
            raise PrismaticLoadError(f"checkpoint has an unknown component {component!r} "
                                     f"(expected {', '.join(COMPONENTS)})")
        module = getattr(vlm, attribute)
        target = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        ignorable = _pruned_vision_key(target) if component == "vision_backbone" else None
        mapping = map_keys(component, {k: tuple(v.shape) for k, v in tensors.items()}, target, ignorable)
        out[attribute] = {mapping[k]: v for k, v in tensors.items() if k in mapping}
    return out


def read_checkpoint(path: Path) -> dict[str, Mapping[str, Any]]:
    import torch

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise PrismaticLoadError(f"{path}: cannot read it as a weights-only checkpoint: {exc}") from exc
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or not {"projector", "llm_backbone"} <= set(model):
        raise PrismaticLoadError(f"{path}: expected {{'model': {{'projector': ..., 'llm_backbone': ...}}}}, "
                                 f"found keys {sorted(model or raw) if isinstance(raw, dict) else type(raw).__name__}")
    return model


# -- loading --------------------------------------------------------------------------------------------------------
def load_prismatic(path_or_id: str | Path, hf_token: str | None = None, *, cache_dir: str | None = None,
                   vision_overrides: Mapping[str, Any] | None = None,
                   llm_overrides: Mapping[str, Any] | None = None) -> Any:
    """A ``PrismVLM`` with a released (or locally trained original) Prismatic model's weights, in eval mode.

    The model is built on the meta device and the checkpoint's tensors (memory-mapped) are assigned to it, so no
    random initialisation runs and nothing is copied that need not be (a dtype cast is the only copy). Components
    the checkpoint does not hold (the vision backbone of frozen-backbone runs) come from their own weights.

    ``vision_overrides`` / ``llm_overrides`` change fields of the derived specs (e.g. where vision weights come from).
    """
    from prism_core.composition import build
    from prism_core.materialize import materialize

    config_path, checkpoint_path = resolve_files(path_or_id, hf_token, cache_dir)
    spec = model_spec_from_config(read_config(config_path), vision_overrides, llm_overrides)
    vlm = build(spec, device="meta")
    mapped = map_checkpoint(vlm, read_checkpoint(checkpoint_path))
    materialize(vlm, state={f"{attribute}.{k}": v for attribute, tensors in mapped.items()
                            for k, v in tensors.items()})
    vlm.requires_grad_(False)
    return vlm.eval()
