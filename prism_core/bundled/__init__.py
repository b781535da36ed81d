"""Specs that ship with prism-core, addressable by name (``prism-run quickstart``)."""

from __future__ import annotations

from importlib import resources


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")


def quickstart() -> str:
    return _read("quickstart")
