"""Pytest fixtures shipped with prism-core (loaded through the ``pytest11`` entry point; torch-free)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from prism_core.registry import Registry, use_registry

# A hub call without these hangs for ~50 s before failing; tests never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def prism_registry() -> Iterator[Registry]:
    """An empty registry (autoload off) installed as the process-wide one for the test."""
    with use_registry(Registry(autoload=False)) as registry:
        yield registry


@pytest.fixture
def register_plugin(prism_registry: Registry) -> Callable[..., type]:
    """``register_plugin(SpecClass, distribution="my-dist")`` registers a spec class in the isolated registry."""

    def register(spec_class: type, distribution: str = "<test>", version: str = "0") -> type:
        prism_registry.register(spec_class, distribution=distribution, version=version)
        return spec_class

    return register
