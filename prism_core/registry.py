"""Plugin discovery: one entry-point group per role, resolved lazily, sorted, and tolerant of broken plugins.

An entry point ``siglip = prism_plugin_siglip.spec:SiglipSpec`` in group ``prism.vision_backbones`` registers the
kind ``siglip``. Listing reads distribution metadata only; a kind's module is imported the first time a spec names
it. A plugin that fails to import is recorded with its error and never takes the others down; a spec that uses it
fails with that error chained.

Environment switches:
- ``PRISM_DISABLE_PLUGIN_AUTOLOAD=1``: ignore installed entry points (tests register plugins in memory).
- ``PRISM_LOAD_PLUGINS=dist-a,dist-b``: load only these distributions (``prism-core`` is always loaded).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata as metadata
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prism_core.types import Role

SPECS_GROUP = "prism.specs"  # name → TOML text (or a callable returning it): bundled and registry specs
HOOKS_GROUP = "prism"  # pluggy hook implementations
CORE_DISTRIBUTION = "prism-core"


class PluginError(Exception):
    """Base of discovery errors."""


class UnknownKindError(PluginError, ValueError):
    pass


class PluginUnavailableError(PluginError):
    """The kind is installed but its plugin failed to load; the original error is chained."""


class DuplicateKindError(PluginError):
    pass


@dataclass
class NamedSpec:
    """A spec addressable by name (``prism-run quickstart``): from an entry point or registered as text."""

    name: str
    distribution: str
    entry_point: metadata.EntryPoint | None = None
    text: str | None = None

    def load_text(self) -> str:
        if self.text is None:
            assert self.entry_point is not None
            obj: Any = self.entry_point.load()
            self.text = obj() if callable(obj) else str(obj)
        return self.text


@dataclass
class KindInfo:
    """One registered kind: where it comes from and, once loaded, its spec class or load error."""

    role: Role
    kind: str
    distribution: str
    version: str
    target: str  # "module:attr"
    entry_point: metadata.EntryPoint | None = None
    spec_class: type | None = None
    error: BaseException | None = None
    conflicts: list[KindInfo] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.conflicts:
            return "conflict"
        return "error" if self.error is not None else ("loaded" if self.spec_class is not None else "ok")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _normalise(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


def _installed_entry_points(groups: set[str]) -> list[tuple[metadata.EntryPoint, str, str]]:
    """(entry point, distribution, version) for the given groups, honouring the env switches, sorted."""
    if _env_flag("PRISM_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    only = os.environ.get("PRISM_LOAD_PLUGINS")
    allowed = None if only is None else {_normalise(d) for d in only.split(",") if d.strip()} | {CORE_DISTRIBUTION}
    found: dict[tuple[str, str, str], tuple[metadata.EntryPoint, str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or "?"
        if allowed is not None and _normalise(name) not in allowed:
            continue
        for ep in dist.entry_points:
            if ep.group in groups:
                # The same distribution can be visible twice (e.g. a stale egg-info): keep one.
                found.setdefault((ep.group, ep.name, _normalise(name)), (ep, name, dist.version))
    return [found[key] for key in sorted(found)]


class Registry:
    """Kinds per role. Build one with ``Registry()``; ``autoload=False`` starts empty (for tests)."""

    def __init__(self, autoload: bool = True) -> None:
        self._kinds: dict[Role, dict[str, KindInfo]] = {role: {} for role in Role}
        self._specs: dict[str, NamedSpec] = {}
        if autoload:
            self._scan()

    # -- discovery ---------------------------------------------------------------------------------------------
    def _scan(self) -> None:
        groups = {role.group: role for role in Role}
        for ep, dist, version in _installed_entry_points(set(groups) | {SPECS_GROUP}):
            if ep.group == SPECS_GROUP:
                self._specs.setdefault(ep.name, NamedSpec(ep.name, dist, entry_point=ep))
            else:
                self._add(KindInfo(groups[ep.group], ep.name, dist, version, ep.value, entry_point=ep))

    def _add(self, info: KindInfo) -> None:
        table = self._kinds[info.role]
        existing = table.get(info.kind)
        if existing is None:
            table[info.kind] = info
        elif _normalise(existing.distribution) != _normalise(info.distribution):
            existing.conflicts.append(info)
        else:
            table[info.kind] = info  # re-registering from the same distribution replaces

    def register(self, spec_class: type, *, distribution: str = "<memory>", version: str = "0") -> None:
        """Register a spec class in memory (tests, notebooks). Its ``role`` and ``kind`` class attributes name it."""
        role = Role(spec_class.role)
        module = getattr(spec_class, "__module__", "?")
        self._add(
            KindInfo(role, spec_class.kind, distribution, version, f"{module}:{spec_class.__qualname__}",
                     spec_class=spec_class)
        )

    def register_spec_text(self, name: str, text: str, *, distribution: str = "<memory>") -> None:
        """Register a named spec (what ``prism-run NAME`` runs) from TOML text."""
        self._specs[name] = NamedSpec(name, distribution, text=text)

    # -- queries -----------------------------------------------------------------------------------------------
    def kinds(self, role: Role) -> list[KindInfo]:
        return [self._kinds[role][k] for k in sorted(self._kinds[role])]

    def all_kinds(self) -> Iterator[KindInfo]:
        for role in Role:
            yield from self.kinds(role)

    def resolve(self, role: Role, kind: str) -> type:
        """The spec class for ``kind``, importing its module on first use."""
        info = self._kinds[role].get(kind)
        if info is None:
            raise UnknownKindError(self._unknown_kind_message(role, kind))
        if info.conflicts:
            dists = ", ".join(sorted({info.distribution, *(c.distribution for c in info.conflicts)}))
            raise DuplicateKindError(
                f"{role.label} kind {kind!r} is registered by more than one distribution: {dists}; "
                f"uninstall one of them"
            )
        if info.spec_class is None and info.error is None:
            self._load(info)
        if info.error is not None:
            raise PluginUnavailableError(
                f"{role.label} kind {kind!r} from {info.distribution} {info.version} failed to load: "
                f"{type(info.error).__name__}: {info.error}"
            ) from info.error
        assert info.spec_class is not None
        return info.spec_class

    def _load(self, info: KindInfo) -> None:
        from prism_core.spec import ROLE_BASES

        assert info.entry_point is not None
        try:
            cls = info.entry_point.load()
            base = ROLE_BASES[info.role]
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"{info.target} is not a subclass of prism_core.spec.{base.__name__}")
            if cls.kind != info.kind:
                raise TypeError(f"entry point {info.kind!r} points at a spec whose kind is {cls.kind!r}")
            info.spec_class = cls
        except Exception as exc:  # a broken plugin is reported, never fatal for the others
            info.error = exc

    def load_all(self) -> None:
        """Import every kind (for listings that show presets); failures are recorded, not raised."""
        for info in self.all_kinds():
            if info.spec_class is None and info.error is None and info.entry_point is not None:
                self._load(info)

    def _unknown_kind_message(self, role: Role, kind: str) -> str:
        installed = sorted(self._kinds[role])
        message = f"unknown {role.label} kind {kind!r}"
        message += f" (installed: {', '.join(installed)})" if installed else " (none installed)"
        close = difflib.get_close_matches(kind, installed, n=1)
        if close:
            info = self._kinds[role][close[0]]
            message += f"; did you mean {close[0]!r} (from {info.distribution})?"
        hint = KNOWN_DISTRIBUTIONS.get((role, kind))
        if hint:
            message += f"; it is provided by {hint}: pip install {hint}"
        return message

    def find_preset(self, role: Role, preset: str) -> list[str]:
        """Kinds of ``role`` that declare a preset named ``preset`` (imports the role's spec modules)."""
        matches = []
        for info in self.kinds(role):
            with contextlib.suppress(PluginError):
                if preset in getattr(self.resolve(role, info.kind), "presets", {}):
                    matches.append(info.kind)
        return matches

    def spec_names(self) -> list[str]:
        return sorted(self._specs)

    def spec_text(self, name: str) -> str | None:
        """TOML text of a named spec (bundled quickstart, registry recipes), or None."""
        named = self._specs.get(name)
        return None if named is None else named.load_text()


#: Kinds of the first-party plugins, so an unknown kind can say what to install.
KNOWN_DISTRIBUTIONS: dict[tuple[Role, str], str] = {
    (Role.VISION_BACKBONE, "siglip"): "prism-plugin-siglip",
    (Role.VISION_BACKBONE, "dinov2"): "prism-plugin-dinov2",
    (Role.VISION_BACKBONE, "clip"): "prism-plugin-clip",
    (Role.VISION_BACKBONE, "timm-vit"): "prism-plugin-timm-vision",
    (Role.VISION_BACKBONE, "fused"): "prism-plugin-fusion",
    (Role.LLM_BACKBONE, "hf-causal-lm"): "prism-plugin-hf-llm",
    (Role.LLM_BACKBONE, "llama2"): "prism-plugin-llama2",
    (Role.TRAIN_STRATEGY, "single"): "prism-plugin-single",
    (Role.TRAIN_STRATEGY, "ddp"): "prism-plugin-ddp",
    (Role.TRAIN_STRATEGY, "fsdp"): "prism-plugin-fsdp",
    (Role.DATASET, "llava"): "prism-plugin-llava-data",
    (Role.DATASET, "synthetic-shapes"): "prism-plugin-shapes",
    (Role.PROJECTOR, "linear"): "prism-plugin-projectors",
    (Role.PROJECTOR, "gelu-mlp"): "prism-plugin-projectors",
    (Role.PROJECTOR, "fused-gelu-mlp"): "prism-plugin-projectors",
}

_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, scanned on first use."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


@contextlib.contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the process-wide one inside the block (tests)."""
    global _registry
    previous, _registry = _registry, registry
    try:
        yield registry
    finally:
        _registry = previous
