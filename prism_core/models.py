"""Released models: look them up by id or by the names used in papers, describe them, load them.

The data lives in plugins. A plugin registers a *model source* under the entry-point group
``prism.model_registries``; the entry point names an object (a module is fine) with

- ``MODELS``: ``{model_id: {"model_id": str, "names": [aliases...], "description": {...}}, ...}``
- ``load(path_or_id, hf_token=None)``: returns a ``PrismVLM``
- optionally ``recognises(path) -> bool``: whether a local directory is in the source's own layout.

Mirrors the original ``prismatic`` API (``available_models``, ``available_model_names``,
``get_model_description``) and keeps the newer spellings (``available_model_ids``, ...). Torch-free.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism_core.registry import _installed_entry_points

MODEL_REGISTRIES_GROUP = "prism.model_registries"


@dataclass(frozen=True)
class ModelEntry:
    """One released model: its id, aliases, description and the source (plugin) that can load it."""

    model_id: str
    names: tuple[str, ...]
    description: Mapping[str, Any]
    source_name: str
    source: Any

    def load(self, hf_token: str | None = None) -> Any:
        return self.source.load(self.model_id, hf_token=hf_token)


_sources: dict[str, Any] | None = None
_extra_sources: dict[str, Any] = {}


def _load_sources() -> dict[str, Any]:
    global _sources
    if _sources is None:
        found: dict[str, Any] = {}
        for ep, dist, _version in _installed_entry_points({MODEL_REGISTRIES_GROUP}):
            try:
                found[f"{dist}:{ep.name}"] = ep.load()
            except Exception as exc:  # one broken registry never hides the others
                FAILED_SOURCES[f"{dist}:{ep.name}"] = exc
        _sources = found
    return {**_sources, **_extra_sources}


#: Model sources that failed to import: name → error.
FAILED_SOURCES: dict[str, BaseException] = {}


def register_model_source(name: str, source: Any) -> None:
    """Add a model source in memory (tests, notebooks); same shape as an entry-point target."""
    _extra_sources[name] = source


def unregister_model_source(name: str) -> None:
    _extra_sources.pop(name, None)


def _entries() -> dict[str, ModelEntry]:
    out: dict[str, ModelEntry] = {}
    for source_name, source in sorted(_load_sources().items()):
        for model_id, raw in getattr(source, "MODELS", {}).items():
            if model_id in out:  # first source wins; ids are namespaced by convention (prism-*, one-stage+7b, ...)
                continue
            out[model_id] = ModelEntry(model_id, tuple(raw.get("names", ())), raw.get("description", {}),
                                       source_name, source)
    return out


def _by_name() -> dict[str, ModelEntry]:
    table: dict[str, ModelEntry] = {}
    for entry in _entries().values():
        for key in (entry.model_id, *entry.names):
            table.setdefault(key, entry)
    return table


def find_model(name_or_id: str) -> ModelEntry | None:
    """The entry for a model id or alias, or None."""
    return _by_name().get(name_or_id)


def resolve_model(name_or_id: str) -> ModelEntry:
    """Like ``find_model`` but raises a ``ValueError`` that suggests close names."""
    entry = find_model(name_or_id)
    if entry is not None:
        return entry
    known = list(_by_name())
    if not known:
        raise ValueError(
            f"unknown model {name_or_id!r}: no model registry is installed "
            f"(pip install prism-plugin-prismatic for the released Prismatic VLMs)"
        )
    close = difflib.get_close_matches(name_or_id, known, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown model {name_or_id!r}{hint} (prism_core.available_model_names() lists every id and name)"
    )


def available_models() -> list[str]:
    """Every released model id, in registry order."""
    return list(_entries())


def available_model_names() -> list[list[str]]:
    """``[model_id, *names]`` for every released model: the names are the labels used in the paper's figures."""
    return [[e.model_id, *e.names] for e in _entries().values()]


def get_model_description(name_or_id: str) -> dict[str, Any]:
    """The structured description (name, optimization procedure, vision, image processing, LLM, data, epochs)."""
    return copy.deepcopy(dict(resolve_model(name_or_id).description))


# The original's newer spellings.
available_model_ids = available_models
available_model_ids_and_names = available_model_names


def source_for_directory(path: str | Path) -> Any | None:
    """The model source whose own layout ``path`` is in (e.g. an original Prismatic run directory), or None."""
    path = Path(path)
    for _name, source in sorted(_load_sources().items()):
        recognises = getattr(source, "recognises", None)
        if recognises is not None and recognises(path):
            return source
    return None


__all__ = [
    "MODEL_REGISTRIES_GROUP",
    "ModelEntry",
    "available_model_ids",
    "available_model_ids_and_names",
    "available_model_names",
    "available_models",
    "find_model",
    "get_model_description",
    "register_model_source",
    "resolve_model",
    "source_for_directory",
]
