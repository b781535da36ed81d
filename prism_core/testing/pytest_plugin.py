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


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch) -> Iterator[Callable[..., None]]:
    """Install a throwaway distribution on ``sys.path`` for one test, as pip would lay it out:

        fake_distribution("my-plugin", {"prism.projectors": {"mine": "my_plugin:MineSpec"}},
                          files={"my_plugin.py": "..."})

    Entry points are real (``importlib.metadata`` finds them), so discovery is tested end to end.
    """
    import sys

    site = tmp_path / "site-packages"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    added_modules: list[str] = []

    def install(name: str, entry_points: dict[str, dict[str, str]], files: dict[str, str] | None = None,
                version: str = "0.1.0") -> None:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = []
        for group, points in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{k} = {v}" for k, v in points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for relative, source in (files or {}).items():
            path = site / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
            added_modules.append(relative.removesuffix(".py").replace("/", ".").removesuffix(".__init__"))

    yield install
    for module in added_modules:
        sys.modules.pop(module, None)


@pytest.fixture
def random_inits(monkeypatch) -> list:
    """Every module whose tensors a materialisation (``prism_core.materialize``) initialised randomly, in order: a
    load from complete weights should leave this empty but for computed buffers."""
    import prism_core.materialize as materialize_module

    seen: list = []
    original = materialize_module._random_init

    def spy(modules, name, module, seed):
        seen.append(module)
        return original(modules, name, module, seed)

    monkeypatch.setattr(materialize_module, "_random_init", spy)
    return seen
