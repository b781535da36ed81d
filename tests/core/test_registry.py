"""Discovery through real entry points of throwaway distributions: lazy, sorted, tolerant of broken plugins."""

from __future__ import annotations

import pytest

from prism_core.registry import (
    DuplicateKindError,
    PluginUnavailableError,
    Registry,
    UnknownKindError,
    use_registry,
)
from prism_core.spec import SpecError, loads_spec
from prism_core.types import Role

SPEC_MODULE = '''
from typing import ClassVar
import attrs
from prism_core.spec import ProjectorSpec

@attrs.frozen(kw_only=True)
class {cls}(ProjectorSpec):
    kind: ClassVar[str] = "{kind}"
    presets: ClassVar = {{"{kind}-tiny": {{"width": 4}}}}
    width: int = 8
'''


def projector_plugin(fake_distribution, dist: str, module: str, kind: str, cls: str = "Spec", body: str = ""):
    fake_distribution(dist, {"prism.projectors": {kind: f"{module}:{cls}"}},
                      files={f"{module}.py": body or SPEC_MODULE.format(cls=cls, kind=kind)})


def test_kinds_are_listed_from_metadata_without_importing_them(fake_distribution, monkeypatch):
    monkeypatch.delenv("PRISM_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    projector_plugin(fake_distribution, "prism-plugin-zeta", "zeta_mod", "zeta")
    projector_plugin(fake_distribution, "prism-plugin-alpha", "alpha_mod", "alpha")
    import sys

    registry = Registry()
    kinds = [k for k in registry.kinds(Role.PROJECTOR) if k.kind in ("alpha", "zeta")]
    assert [k.kind for k in kinds] == ["alpha", "zeta"]  # sorted: identical on every rank
    assert "alpha_mod" not in sys.modules
    spec_class = registry.resolve(Role.PROJECTOR, "alpha")
    assert spec_class.kind == "alpha" and "alpha_mod" in sys.modules and "zeta_mod" not in sys.modules


def test_two_distributions_registering_one_kind_is_an_error_naming_both(fake_distribution):
    projector_plugin(fake_distribution, "prism-plugin-one", "one_mod", "mlp")
    projector_plugin(fake_distribution, "prism-plugin-two", "two_mod", "mlp")
    registry = Registry()
    with pytest.raises(DuplicateKindError, match="prism-plugin-one, prism-plugin-two"):
        registry.resolve(Role.PROJECTOR, "mlp")
    [info] = [k for k in registry.kinds(Role.PROJECTOR) if k.kind == "mlp"]
    assert info.status == "conflict"


def test_a_broken_plugin_is_reported_and_leaves_the_others_usable(fake_distribution):
    projector_plugin(fake_distribution, "prism-plugin-broken", "broken_mod", "broken",
                     body="import a_module_that_does_not_exist\n")
    projector_plugin(fake_distribution, "prism-plugin-fine", "fine_mod", "fine")
    registry = Registry()
    registry.load_all()
    by_kind = {k.kind: k for k in registry.kinds(Role.PROJECTOR)}
    assert by_kind["broken"].status == "error" and isinstance(by_kind["broken"].error, ModuleNotFoundError)
    assert by_kind["fine"].status == "loaded"
    with pytest.raises(PluginUnavailableError, match=r"prism-plugin-broken 0\.1\.0 failed to load") as info:
        registry.resolve(Role.PROJECTOR, "broken")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)  # the original error is chained


def test_a_spec_naming_a_broken_kind_fails_with_the_original_error(fake_distribution):
    projector_plugin(fake_distribution, "prism-plugin-broken", "broken_mod2", "broken",
                     body="raise RuntimeError('CUDA toolkit mismatch')\n")
    with use_registry(Registry()), pytest.raises(SpecError) as info:
        loads_spec('schema = 1\n[model]\nvision = {kind = "x"}\nllm = {kind = "y"}\nprojector = {kind = "broken"}\n')
    assert "RuntimeError: CUDA toolkit mismatch" in dict(info.value.problems)["model.projector"]


def test_an_entry_point_must_name_a_spec_class_of_its_role_and_kind(fake_distribution):
    projector_plugin(fake_distribution, "prism-plugin-liar", "liar_mod", "claimed",
                     body=SPEC_MODULE.format(cls="Spec", kind="actual"))
    with pytest.raises(PluginUnavailableError, match="kind is 'actual'"):
        Registry().resolve(Role.PROJECTOR, "claimed")


def test_env_switches_disable_autoload_or_select_distributions(fake_distribution, monkeypatch):
    projector_plugin(fake_distribution, "prism-plugin-a", "a_mod", "kind-a")
    projector_plugin(fake_distribution, "prism-plugin-b", "b_mod", "kind-b")
    monkeypatch.setenv("PRISM_LOAD_PLUGINS", "prism-plugin-b")
    kinds = {k.kind for k in Registry().kinds(Role.PROJECTOR)}
    assert "kind-b" in kinds and "kind-a" not in kinds
    monkeypatch.setenv("PRISM_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert Registry().kinds(Role.PROJECTOR) == []


def test_unknown_kind_suggests_the_closest_installed_kind(fake_distribution):
    projector_plugin(fake_distribution, "prism-plugin-mlp", "mlp_mod", "gelu-mlp")
    with pytest.raises(UnknownKindError, match="did you mean 'gelu-mlp' \\(from prism-plugin-mlp\\)"):
        Registry().resolve(Role.PROJECTOR, "gelu-mpl")


def test_a_preset_name_alone_finds_its_kind(fake_distribution):
    projector_plugin(fake_distribution, "prism-plugin-mlp", "mlp_mod2", "wide")
    with use_registry(Registry()) as registry:
        assert registry.find_preset(Role.PROJECTOR, "wide-tiny") == ["wide"]
