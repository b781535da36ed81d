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
