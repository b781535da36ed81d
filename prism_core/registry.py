"""Plugin discovery: one entry-point group per role, resolved lazily, sorted, and tolerant of broken plugins.

An entry point ``siglip = prism_plugin_siglip.spec:SiglipSpec`` in group ``prism.vision_backbones`` registers the
kind ``siglip``. Listing reads distribution metadata only; a kind's module is imported the first time a spec names
it. A plugin that fails to import is recorded with its error and never takes the others down; a spec that uses it
fails with that error chained. A kind, or a named spec, that two distributions register is a conflict: an error
naming both when it is used, and ``conflict`` in ``prism plugins``.

Environment switches:
- ``PRISM_DISABLE_PLUGIN_AUTOLOAD=1``: ignore installed entry points (tests register plugins in memory).
- ``PRISM_LOAD_PLUGINS=dist-a,dist-b``: load only these distributions (``prism-core`` is always loaded).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterable, Iterator
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
    entry_point: EntryPoint | None = None
    text: str | None = None
    conflicts: list[NamedSpec] = field(default_factory=list)

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
    entry_point: EntryPoint | None = None
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


@dataclass(frozen=True)
class EntryPoint:
    """One ``name = module:attr`` line of a distribution's ``entry_points.txt``: what ``importlib.metadata`` gives,
    read without importing it (that import, email parsing included, cost ``prism plugins`` a fifth of its time)."""

    name: str
    value: str
    group: str

    def load(self) -> Any:
        module, _, attrs = self.value.partition(":")
        obj = importlib.import_module(module.strip())
        for attr in attrs.split("[")[0].strip().split(".") if attrs.strip() else ():  # "[extras]" select nothing
            obj = getattr(obj, attr)
        return obj


def _parse_entry_points(text: str) -> Iterator[EntryPoint]:
    """The entry points of an ``entry_points.txt`` (INI sections, ``name = value`` lines, ``#``/``;`` comments)."""
    group = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group is not None and "=" in line:
            name, _, value = line.partition("=")
            yield EntryPoint(name.strip(), value.strip(), group)


def _header_fields(text: str) -> dict[str, str]:
    """``Name`` and ``Version`` of a METADATA / PKG-INFO file: RFC 822 headers, which end at the first blank line."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version"):
            fields.setdefault(key, value.strip())
    return fields


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError:
        return None


def _distribution_dirs() -> Iterator[str]:
    """``*.dist-info`` and ``*.egg-info`` directories on ``sys.path``, in path order (where importlib.metadata
    looks too; zipped eggs aside)."""
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:  # missing, or a zip file
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                yield os.path.join(entry or ".", name)


def _path_state() -> tuple[tuple[str, int | None], ...]:
    """What decides which distributions are visible: ``sys.path`` and each entry's mtime (installing or removing a
    distribution adds or removes a directory there, which changes the mtime)."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


_scan_cache: tuple[Any, list[tuple[EntryPoint, str, str]]] | None = None


def _prism_entry_points() -> list[tuple[EntryPoint, str, str]]:
    """(entry point, distribution, version) of every ``prism`` and ``prism.*`` group, sorted. One pass over the
    installed distributions per process (again when ``sys.path``, its directories or the env switches change).

    Only a distribution whose ``entry_points.txt`` names a prism group has its metadata read: parsing the METADATA
    of every installed distribution (torch, transformers and a hundred more) was most of ``prism plugins``' time.
    """
    global _scan_cache
    only = os.environ.get("PRISM_LOAD_PLUGINS")
    key = (_env_flag("PRISM_DISABLE_PLUGIN_AUTOLOAD"), only, _path_state())
    if _scan_cache is not None and _scan_cache[0] == key:
        return _scan_cache[1]
    allowed = None if only is None else {_normalise(d) for d in only.split(",") if d.strip()} | {CORE_DISTRIBUTION}
    found: dict[tuple[str, str, str], tuple[EntryPoint, str, str]] = {}
    for directory in [] if key[0] else _distribution_dirs():
        text = _read(os.path.join(directory, "entry_points.txt"))
        if not text or "[prism" not in text:
            continue
        metadata_file = "METADATA" if directory.endswith(".dist-info") else "PKG-INFO"
        fields = _header_fields(_read(os.path.join(directory, metadata_file)) or "")
        name = fields.get("Name") or os.path.basename(directory).rpartition(".")[0].split("-")[0]
        version = fields.get("Version", "?")
        if allowed is not None and _normalise(name) not in allowed:
            continue
        for ep in _parse_entry_points(text):
            if ep.group == HOOKS_GROUP or ep.group.startswith(HOOKS_GROUP + "."):
                # The same distribution can be visible twice (e.g. a stale egg-info): keep the first on sys.path.
                found.setdefault((ep.group, ep.name, _normalise(name)), (ep, name, version))
    entries = [found[k] for k in sorted(found)]
    _scan_cache = (key, entries)
    return entries


def _installed_entry_points(groups: set[str]) -> list[tuple[EntryPoint, str, str]]:
    """(entry point, distribution, version) for the given prism groups, honouring the env switches, sorted."""
    return [entry for entry in _prism_entry_points() if entry[0].group in groups]


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
                _add_to(self._specs, ep.name, NamedSpec(ep.name, dist, entry_point=ep))
            else:
                self._add(KindInfo(groups[ep.group], ep.name, dist, version, ep.value, entry_point=ep))

    def _add(self, info: KindInfo) -> None:
        _add_to(self._kinds[info.role], info.kind, info)

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
        _add_to(self._specs, name, NamedSpec(name, distribution, text=text))

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
            raise DuplicateKindError(_conflict_message(f"{role.label} kind {kind!r}", info))
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

    def load_all(self, kinds: Iterable[KindInfo] | None = None) -> None:
        """Import every kind, or these (for listings that show presets); failures are recorded, not raised."""
        for info in self.all_kinds() if kinds is None else kinds:
            if info.spec_class is None and info.error is None and info.entry_point is not None:
                self._load(info)

    def _unknown_kind_message(self, role: Role, kind: str) -> str:
        import difflib

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

    def named_specs(self) -> list[NamedSpec]:
        return [self._specs[name] for name in sorted(self._specs)]

    def spec_text(self, name: str) -> str | None:
        """TOML text of a named spec (bundled quickstart, registry recipes), or None.

        A name that two distributions ship is a ``SpecError`` naming both: the spec asked for is ambiguous, and
        silently running the first one found would train something else than the user meant.
        """
        named = self._specs.get(name)
        if named is not None and named.conflicts:
            from prism_core.spec import SpecError  # imported here: prism_core.spec imports this module

            raise SpecError([("", _conflict_message(f"named spec {name!r}", named))], f"<spec {name}>")
        return None if named is None else named.load_text()


def _add_to(table: dict[str, Any], name: str, entry: KindInfo | NamedSpec) -> None:
    """The rule for kinds and named specs alike: a name registered by a second distribution is a conflict (an
    error when used); registering it again from the same distribution replaces it."""
    existing = table.get(name)
    if existing is None:
        table[name] = entry
    elif _normalise(existing.distribution) != _normalise(entry.distribution):
        existing.conflicts.append(entry)
    else:
        entry.conflicts[:0] = existing.conflicts
        table[name] = entry


def _conflict_message(what: str, entry: KindInfo | NamedSpec) -> str:
    dists = ", ".join(sorted({entry.distribution, *(c.distribution for c in entry.conflicts)}))
    return f"{what} is registered by more than one distribution: {dists}; uninstall one of them"


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
    (Role.EVAL_TASK, "synthetic-shapes"): "prism-plugin-shapes",
    **{(Role.MODEL_ADAPTER, kind): "prism-plugin-peft" for kind in ("lora", "dora", "qlora")},
    **{(Role.EVAL_TASK, kind): "prism-plugin-vlm-eval" for kind in (
        "vqa-v2", "gqa", "vizwiz", "text-vqa", "pope", "vsr", "tally-qa", "ai2d", "refcoco", "refcoco+", "refcocog",
        "ocid-ref")},
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
