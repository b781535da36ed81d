"""Saving and loading prism models.

A saved model is a directory:

- ``model.toml``: the resolved ``ModelSpec`` (``dumps_spec``; every default filled in), enough to rebuild it;
- ``model.safetensors``: every weight (never a pickle);
- ``prism.json``: format version, weight dtype, and the distributions and versions that provided each component.

Writes go to a temporary sibling directory that is renamed into place, so a crash never leaves a half-written
model under the final name. ``load`` also accepts anything a plugin's model loader understands (entry-point group
``prism.model_loaders``: ``name = "module:function"``, called as ``function(path_or_id, hf_token=, cache_dir=)`` and
returning a ``PrismVLM`` or ``None`` for "not mine"), and Hub repository ids holding a saved prism model.
"""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from prism_core.spec import ModelSpec, dumps_spec, loads_spec

if TYPE_CHECKING:
    import torch

    from prism_core.vlm import PrismVLM

SPEC_FILE = "model.toml"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "prism.json"
FORMAT = "prism-model"
FORMAT_VERSION = 1
LOADERS_GROUP = "prism.model_loaders"


class ModelFormatError(ValueError):
    """A saved model directory that cannot be read; the message names the file."""


# -- saving -------------------------------------------------------------------------------------------------------
def component_versions(spec: ModelSpec) -> dict[str, dict[str, str]]:
    """Role → {kind, distribution, version} of the plugins that provide each component of ``spec``."""
    import importlib.metadata as metadata

    from prism_core.registry import get_registry

    registry = get_registry()
    out: dict[str, dict[str, str]] = {}
    components = {"vision": spec.vision, "projector": spec.projector, "llm": spec.llm,
                  "prompt_format": spec.prompt_format}
    for name, component in components.items():
        if component is None:
            continue
        info = next((i for i in registry.kinds(component.role) if i.kind == component.kind), None)
        out[name] = {"kind": component.kind, "distribution": info.distribution if info else "?",
                     "version": info.version if info else "?"}
    try:
        core = metadata.version("prism-core")
    except metadata.PackageNotFoundError:  # running from a source tree
        core = "unknown"
    out["core"] = {"kind": "", "distribution": "prism-core", "version": core}
    return out


def _weights_dtype(vlm: torch.nn.Module) -> str | None:
    dtypes = {str(p.dtype).removeprefix("torch.") for p in vlm.parameters() if p.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def save(vlm: PrismVLM, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``vlm`` to directory ``path`` atomically; an existing directory is replaced only if ``overwrite``."""
    from safetensors.torch import save_model

    if vlm.spec is None:
        raise ValueError("this PrismVLM has no spec (it was not built by prism_core.build/compose), so it cannot be "
                         "saved in a form that rebuilds it")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    spec = attrs.evolve(vlm.spec, init_from=None)  # the saved weights already include the warm start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / SPEC_FILE).write_text(dumps_spec(spec), encoding="utf-8")
        save_model(vlm, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "prism_format": FORMAT},
                   force_contiguous=True)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": _weights_dtype(vlm),
                    "components": component_versions(spec)}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# -- loading ------------------------------------------------------------------------------------------------------
def load_weights(vlm: torch.nn.Module, path: str | Path) -> None:
    """Load a saved model's weights into an already built ``vlm`` (every key must match)."""
    from safetensors.torch import load_model

    file = Path(path) / WEIGHTS_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no weights file at {file}")
    try:
        missing, unexpected = load_model(vlm, str(file), strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelFormatError(f"{file}: weights do not fit the model built from the spec: {exc}") from None
    if missing or unexpected:
        raise ModelFormatError(
            f"{file}: weights do not match the model built from the spec: "
            f"missing {sorted(missing)[:8]}{' …' if len(missing) > 8 else ''}, "
            f"unexpected {sorted(unexpected)[:8]}{' …' if len(unexpected) > 8 else ''}"
        )


def read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST_FILE
    if not file.is_file():
        return {}
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{file}: invalid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ModelFormatError(f"{file}: not a prism model (format {manifest.get('format')!r})")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFormatError(f"{file}: written by a newer prism-core (format_version "
                               f"{manifest['format_version']} > {FORMAT_VERSION}): upgrade prism-core")
    return manifest


def _warn_on_version_drift(path: Path, manifest: dict[str, Any], spec: ModelSpec) -> None:
    saved = manifest.get("components", {})
    now = component_versions(spec)
    drift = [f"{role}: {s.get('distribution')} {s.get('version')} → {now[role]['distribution']} "
             f"{now[role]['version']}" for role, s in saved.items()
             if role in now and role != "core" and (s.get("distribution"), s.get("version"))
             != (now[role]["distribution"], now[role]["version"])]
    if drift:
        warnings.warn(f"{path} was saved with other plugin versions ({'; '.join(drift)}); outputs may differ",
                      stacklevel=3)


def load_dir(path: str | Path) -> PrismVLM:
    """Rebuild a model saved by ``save``: spec → components → weights (eval mode, no gradients)."""
    import torch

    from prism_core.composition import build

    path = Path(path)
    spec_file = path / SPEC_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved prism model: {SPEC_FILE} is missing")
    manifest = read_manifest(path)
    spec = loads_spec(spec_file.read_text(encoding="utf-8"), cls=ModelSpec, source=str(spec_file))
    _warn_on_version_drift(path, manifest, spec)
    vlm = build(spec, load_init_weights=False)
    dtype = manifest.get("dtype")
    if dtype:
        vlm.to(dtype=getattr(torch, dtype))
    load_weights(vlm, path)
    vlm.eval()
    vlm.requires_grad_(False)
    return vlm


def _plugin_loaders() -> list[tuple[str, Any]]:
    from prism_core.registry import _installed_entry_points

    return [(f"{dist}:{ep.name}", ep) for ep, dist, _version in _installed_entry_points({LOADERS_GROUP})]


def load(path_or_id: str | Path, hf_token: str | None = None, cache_dir: str | Path | None = None) -> PrismVLM:
    """Load a model: a directory written by ``save`` (or a run directory, meaning its final ``model/``), anything a
    ``prism.model_loaders`` plugin resolves (e.g. released Prismatic ids), or a Hub repository holding a saved prism
    model."""
    path = Path(path_or_id)
    if (path / SPEC_FILE).is_file():
        return load_dir(path)
    if (path / "model" / SPEC_FILE).is_file():  # a run directory: its final export
        return load_dir(path / "model")
    for name, entry_point in _plugin_loaders():
        try:
            loader = entry_point.load()
        except Exception as exc:
            warnings.warn(f"model loader {name} failed to import: {exc}", stacklevel=2)
            continue
        vlm = loader(str(path_or_id), hf_token=hf_token, cache_dir=cache_dir)
        if vlm is not None:
            return vlm
    if path.exists():
        raise ModelFormatError(f"{path} is not a saved prism model ({SPEC_FILE} missing) and no installed model "
                               "loader recognises it")
    text = str(path_or_id)
    if text.count("/") == 1 and not text.startswith((".", "/")):
        return load_dir(_download(text, hf_token, cache_dir))
    raise FileNotFoundError(f"no model at {text!r}: not a directory, not an id any installed model loader knows "
                            "(see prism_core.available_model_names()), and not a Hub repo id (owner/name)")


def _download(repo_id: str, hf_token: str | None, cache_dir: str | Path | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, token=hf_token, cache_dir=cache_dir,
                                      allow_patterns=[SPEC_FILE, WEIGHTS_FILE, MANIFEST_FILE]))
    except Exception as exc:
        raise FileNotFoundError(
            f"could not fetch prism model {repo_id!r} from the Hub ({type(exc).__name__}: {exc}); offline mode "
            "(HF_HUB_OFFLINE=1) needs it in the cache, and gated repositories need hf_token"
        ) from exc
