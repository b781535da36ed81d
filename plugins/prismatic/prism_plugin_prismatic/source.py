"""The model source registered under ``prism.model_registries``: catalog data plus loading. Torch-free at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prism_plugin_prismatic.catalog import HUB_REPO, MODELS

__all__ = ["HUB_REPO", "MODELS", "load", "recognises"]


def recognises(path: Path) -> bool:
    """An original Prismatic run directory: ``config.json`` plus ``checkpoints/latest-checkpoint.pt``."""
    path = Path(path)
    return (path / "config.json").is_file() and (path / "checkpoints" / "latest-checkpoint.pt").is_file()


def load(path_or_id: str | Path, hf_token: str | None = None, **kwargs: Any) -> Any:
    from prism_plugin_prismatic.original import load_prismatic

    return load_prismatic(path_or_id, hf_token=hf_token, **kwargs)


def load_if_known(path_or_id: str, hf_token: str | None = None, cache_dir: str | Path | None = None) -> Any:
    """``prism.model_loaders`` hook for ``prism_core.load``: a released id/alias or an original run directory, else
    ``None`` (not ours)."""
    from prism_plugin_prismatic.original import _catalog_id

    if recognises(Path(path_or_id)) or _catalog_id(str(path_or_id)) is not None:
        return load(path_or_id, hf_token=hf_token, cache_dir=None if cache_dir is None else str(cache_dir))
    return None
