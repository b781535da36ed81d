"""Saving and loading prism models.

A saved model is a directory:

- ``model.toml``: the resolved ``ModelSpec`` (``dumps_spec``; every default filled in), enough to rebuild it;
- ``model.safetensors``: every weight (never a pickle);
- ``prism.json``: format version, weight dtype, and the distributions and versions that provided each component.

A model carrying an adapter (``[train.adapter]``, ``prism_core.adapters``) is saved as what trained and a
reference to its base: ``model.toml`` is the base's spec (``init_from`` kept, as an absolute path: the base's
weights come from there, the pretrained files and the seeds, as in training), ``adapter.toml`` the adapter's
spec, ``trained.safetensors`` the fully trained parameters (the projector), and the adapter's own files in its
kind's layout (peft's for the LLM: ``adapter_model.safetensors`` + ``adapter_config.json``); ``prism.json``
says which (``format_version`` 2). ``load`` rebuilds the base, injects the adapter and assigns what trained.

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
from collections.abc import Callable, Iterable, Mapping
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
ADAPTER_SPEC_FILE = "adapter.toml"
TRAINED_FILE = "trained.safetensors"
FORMAT = "prism-model"
FORMAT_VERSION = 1
ADAPTER_FORMAT_VERSION = 2  # a base reference + an adapter: older prism-core versions say to upgrade
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
    if getattr(vlm, "adapter", None) is not None:
        from prism_core.adapters import adapter_keys

        return save_adapted(vlm.spec, vlm.adapter, vlm.state_dict(), adapter_keys(vlm), path, overwrite=overwrite)
    spec = attrs.evolve(vlm.spec, init_from=None)  # the saved weights already include the warm start

    def write(tmp: Path) -> None:
        (tmp / SPEC_FILE).write_text(dumps_spec(spec), encoding="utf-8")
        save_model(vlm, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "prism_format": FORMAT},
                   force_contiguous=True)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": _weights_dtype(vlm),
                    "components": component_versions(spec)}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    return _write_atomically(Path(path), write, overwrite)


def save_adapted(spec: ModelSpec, adapter: Any, state: Mapping[str, torch.Tensor], adapter_keys: Iterable[str],
                 path: str | Path, *, overwrite: bool = True) -> Path:
    """Write an adapted model from what trained (``state``: its state dict, adapter and fully trained
    parameters; ``adapter_keys`` says which are the adapter's) and its base's ``spec``, atomically."""
    from safetensors.torch import save_file

    from prism_core.registry import get_registry
    from prism_core.spec import to_dict

    own = set(adapter_keys)
    base = spec if spec.init_from is None else attrs.evolve(spec, init_from=str(Path(spec.init_from).resolve()))
    info = next((i for i in get_registry().kinds(adapter.spec.role) if i.kind == adapter.spec.kind), None)

    def write(tmp: Path) -> None:
        import tomli_w

        (tmp / SPEC_FILE).write_text(dumps_spec(base), encoding="utf-8")
        (tmp / ADAPTER_SPEC_FILE).write_text(tomli_w.dumps(to_dict(adapter.spec)), encoding="utf-8")
        trained = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in own}
        if trained:
            save_file(trained, str(tmp / TRAINED_FILE), metadata={"format": "pt", "prism_format": FORMAT})
        notes = adapter.write({k: v for k, v in state.items() if k in own}, tmp)
        manifest = {"format": FORMAT, "format_version": ADAPTER_FORMAT_VERSION, "dtype": None,
                    "components": component_versions(base),
                    "adapter": {"kind": adapter.spec.kind, "distribution": info.distribution if info else "?",
                                "version": info.version if info else "?", "notes": notes,
                                "trained": sorted(trained)}}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    return _write_atomically(Path(path), write, overwrite)


def _write_atomically(path: Path, write: Callable[[Path], None], overwrite: bool) -> Path:
    """``write`` into a temporary sibling directory, then rename it into place (replacing ``path``)."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
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
def _weights_file(path: str | Path) -> Path:
    file = Path(path) / WEIGHTS_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no weights file at {file}")
    return file


def read_weights(model: torch.nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """A saved model's weights, memory-mapped (nothing is read until used), checked against ``model``'s keys."""
    from safetensors.torch import load_file

    from prism_core.materialize import check_state_keys

    if Path(path, ADAPTER_SPEC_FILE).is_file():
        raise ModelFormatError(f"{path} holds an adapter and a reference to its base, not a model's weights: "
                               f"merge it first (prism export merged {path} OUT) and start from OUT")
    file = _weights_file(path)
    try:
        state = load_file(str(file))
    except Exception as exc:  # safetensors raises several types for a corrupt or truncated file
        raise ModelFormatError(f"{file}: not a readable safetensors file ({exc})") from None
    mismatch = check_state_keys(model, state)
    if mismatch is not None and getattr(model, "adapter", None) is not None:
        from prism_core.adapters import adapter_keys
        from prism_core.materialize import StateMismatchError

        missing = [k for k in mismatch.missing if k not in adapter_keys(model)]  # the base has no adapter
        mismatch = StateMismatchError(missing, mismatch.unexpected) if missing or mismatch.unexpected else None
    if mismatch is not None:
        raise ModelFormatError(f"{file}: weights do not match the model built from the spec: {mismatch}")
    return state


def load_weights(vlm: torch.nn.Module, path: str | Path) -> None:
    """Load a saved model's weights into ``vlm`` (every key must match): assigned to tensors still on the meta
    device, copied into real ones."""
    from prism_core.materialize import StateMismatchError, materialize

    state = read_weights(vlm, path)
    try:
        materialize(vlm, state=state, strict=True)
    except StateMismatchError as exc:  # shapes
        raise ModelFormatError(f"{_weights_file(path)}: weights do not fit the model built from the spec: "
                               f"{exc}") from None


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
    if int(manifest.get("format_version", 0)) > ADAPTER_FORMAT_VERSION:
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
    """Rebuild a model saved by ``save``: spec → components on the meta device → the saved weights assigned
    (memory-mapped: no random initialisation, no second copy). Eval mode, no gradients."""
    import torch

    from prism_core.composition import build

    path = Path(path)
    spec_file = path / SPEC_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved prism model: {SPEC_FILE} is missing")
    manifest = read_manifest(path)
    spec = loads_spec(spec_file.read_text(encoding="utf-8"), cls=ModelSpec, source=str(spec_file))
    _warn_on_version_drift(path, manifest, spec)
    if (path / ADAPTER_SPEC_FILE).is_file():
        return _load_adapted(path, manifest, spec)
    vlm = build(spec, load_init_weights=False, device="meta")
    dtype = manifest.get("dtype")
    if dtype:
        vlm.to(dtype=getattr(torch, dtype))  # free on meta; the saved tensors then need no cast
    load_weights(vlm, path)
    vlm.eval()
    vlm.requires_grad_(False)
    return vlm


def _load_adapted(path: Path, manifest: dict[str, Any], spec: ModelSpec) -> PrismVLM:
    """The base rebuilt as in training (its ``init_from``, pretrained files and seeds), the adapter injected, and
    what trained assigned; every trained tensor must be there."""
    from safetensors.torch import load_file

    from prism_core.adapters import adapt, load_adapter_spec, trained_keys
    from prism_core.composition import build
    from prism_core.materialize import StateMismatchError, materialize

    adapter_file = path / ADAPTER_SPEC_FILE
    adapter_spec = load_adapter_spec(adapter_file.read_text(encoding="utf-8"), str(adapter_file))
    if spec.init_from is not None and not Path(spec.init_from).exists():
        raise ModelFormatError(f"{path / SPEC_FILE}: the base model this adapter was trained on, "
                               f"{spec.init_from}, is missing (model.init_from)")
    vlm = build(spec, device="meta")
    adapter = adapt(vlm, adapter_spec, path="", source=str(adapter_file))
    notes = manifest.get("adapter", {}).get("notes", {})
    try:
        state = adapter.read(path, notes)
        if (path / TRAINED_FILE).is_file():
            state.update(load_file(str(path / TRAINED_FILE)))
    except Exception as exc:  # a missing, truncated or foreign file
        raise ModelFormatError(f"{path}: the adapter's weights cannot be read ({exc})") from None
    expected = trained_keys(vlm)
    mismatch = StateMismatchError(expected - set(state), set(state) - expected)
    if mismatch.missing or mismatch.unexpected:
        raise ModelFormatError(f"{path}: the saved adapter does not fit the model its specs build: {mismatch}")
    try:
        materialize(vlm, state=state)
    except StateMismatchError as exc:
        raise ModelFormatError(f"{path}: the saved adapter does not fit the model its specs build: {exc}") from None
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
