"""Fixtures for core model tests: a registry of tiny fake components, and models composed from it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prism_core.registry import Registry, use_registry
from prism_core.testing.fakes import fake_registry


@pytest.fixture
def fakes() -> Iterator[Registry]:
    with use_registry(fake_registry()) as registry:
        yield registry


@pytest.fixture
def vlm(fakes: Registry):
    from prism_core.composition import compose

    return compose(vision="fake-vit-tiny", projector="fake-mlp", llm="fake-llama-tiny", seed=1)


@pytest.fixture
def fused_vlm(fakes: Registry):
    from prism_core.composition import compose

    return compose(vision="fake-fused-tiny", projector="fake-mlp", llm="fake-llama-tiny", seed=1)
