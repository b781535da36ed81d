"""Construct on the meta device, then give every tensor its value once, where it will live.

``prism_core.build(spec, device="meta")`` makes a model whose parameters and buffers have shapes but no storage;
``materialize(model, device=...)`` gives each meta tensor a value, never holding a second (random) copy of it:

1. ``state``, when given (a full state dict, e.g. a memory-mapped safetensors file): assigned as it is when the
   dtype and device already match (no copy), cast or moved otherwise. It is also copied into tensors that are
   already real (a component that could not be built on meta), so ``state`` always wins;
2. else the ``initial_state()`` of the outermost enclosing module that has one and holds the key: a component's
   pretrained weights, or the composed model's warm start (``spec.init_from``). It is called only if needed;
3. else the ``init_module(module, name)`` hook of the nearest enclosing module: the component's own random
   initialisation, run on one module's tensors at a time with torch's RNG seeded from the hook owner's
   ``init_seed`` and the module's name (relative to the owner). A value is therefore a function of (seed, name)
   alone: the same in an eager build, in a meta build materialised later, on every rank and on every run.

Sharded parameters (FSDP2 ``DTensor``s, after ``fully_shard`` of the meta model) receive only this rank's part: a
value is computed (or memory-mapped) in full on the CPU one module at a time, sliced, and the full copy dropped, so a
rank holds its shards plus at most one module in full. Random values are always drawn on the CPU (CPU and CUDA
generators differ) and then moved, so they do not depend on the device either.

The hooks are optional attributes of any module (see ``prism_core.protocols``): ``init_module(module, name)``
fills ``module``'s own parameters and buffers in place (recurse=False; anything else it touches is still on meta
and is ignored), ``init_seed: int`` seeds it (default: the ``seed`` given to ``materialize``, else the model's
``init_seed``, else 0), and ``initial_state()`` returns ``{key relative to the module: tensor}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

#: Inserted into parameter names by activation-checkpoint wrappers; state dicts and seeds use the names without it.
_WRAPPER_SEGMENT = "_checkpoint_wrapped_module"
#: A module that wraps another the same way names the wrapped child in this attribute (an adapter layer around the
#: original linear layer: peft's ``base_layer``). The child's tensors are then keyed, seeded and initialised as if the
#: wrapper were not there (the wrapper's own hooks do not reach into it), so the original weights and values apply.
WRAPPED_CHILD_ATTRIBUTE = "wrapped_child_name"


class StateMismatchError(ValueError):
    """A state dict that does not fit the model: missing keys, unexpected keys or wrong shapes."""

    def __init__(self, missing: Iterable[str] = (), unexpected: Iterable[str] = (), shapes: Iterable[str] = ()):
        self.missing, self.unexpected, self.shapes = sorted(missing), sorted(unexpected), list(shapes)
        parts = [f"{label} {_some(keys)}" for label, keys in (("missing", self.missing),
                 ("unexpected", self.unexpected), ("wrong shape:", self.shapes)) if keys]
        super().__init__("; ".join(parts))


class UninitializableError(RuntimeError):
    """Meta tensors that no enclosing module can initialise (no ``init_module`` hook) and no state covers."""


def _some(keys: list[str], n: int = 8) -> str:
    return f"{', '.join(keys[:n])}{' …' if len(keys) > n else ''}"


# -- building on meta ------------------------------------------------------------------------------------------------
def building_on_meta() -> bool:
    """Whether the caller is constructing under ``torch.device("meta")``."""
    return torch.empty(()).device.type == "meta"


def build_on_meta(make: Callable[[], M], *, device: str | torch.device | None = None) -> M:
    """``make()`` on the meta device; unless the caller is itself building on meta (or passes ``device="meta"``),
    materialised at once on ``device`` (default CPU). So an eager build of a component equals a meta build of it
    materialised later: the pattern every first-party component builder follows."""
    stay_on_meta = building_on_meta() or (device is not None and torch.device(device).type == "meta")
    with torch.device("meta"):
        module = make()
    if not stay_on_meta:
        materialize(module, device=device or "cpu")
    return module


def _is_meta(tensor: torch.Tensor) -> bool:
    local = getattr(tensor, "_local_tensor", None)  # a DTensor's storage is its local shard
    return (local if local is not None else tensor).is_meta


def has_meta_tensors(module: nn.Module) -> bool:
    return any(_is_meta(t) for t in (*module.parameters(), *module.buffers()))


def uninitializable(module: nn.Module) -> list[str]:
    """Names of meta tensors in ``module`` that no ``init_module`` hook (of it or a submodule) would initialise."""
    modules = dict(module.named_modules())
    return [entry.key for entry in _entries(module) if _is_meta(entry.tensor)
            and _owner(modules, entry.module_name, "init_module") is None]


def seed_for(seed: int, name: str) -> int:
    """The RNG seed of the module called ``name`` in a component seeded ``seed``: stable across processes."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# -- what the model holds -----------------------------------------------------------------------------------------
def _wrapped_child(module: nn.Module | None) -> str | None:
    return getattr(module, WRAPPED_CHILD_ATTRIBUTE, None) if module is not None else None


def _clean_name(modules: Mapping[str, nn.Module], name: str) -> str:
    """A raw module name as state dicts and seeds spell it: without wrapper segments (activation-checkpoint
    wrappers, and the wrapped child of a module that names one in ``wrapped_child_name``)."""
    parts: list[str] = []
    parent = ""
    for part in name.split(".") if name else []:
        if part != _WRAPPER_SEGMENT and part != _wrapped_child(modules.get(parent)):
            parts.append(part)
        parent = f"{parent}.{part}" if parent else part
    return ".".join(parts)


@dataclass
class _Entry:
    """One parameter or buffer, with every other name it is registered under (tied weights)."""

    module_name: str  # raw, as named_modules() spells it
    module: nn.Module
    name: str  # in the module's own table
    is_param: bool
    persistent: bool
    key: str  # state-dict key: full, without wrapper segments
    aliases: list[tuple[nn.Module, str, str]] = field(default_factory=list)  # (module, name, key)
    raw_key: str = ""  # as named_parameters() spells it, when a wrapped child makes it differ from ``key``

    @property
    def tensor(self) -> torch.Tensor:
        table = self.module._parameters if self.is_param else self.module._buffers
        return table[self.name]

    def names(self) -> list[str]:
        return [self.key, *(key for _, _, key in self.aliases), *([self.raw_key] if self.raw_key else [])]


def _entries(model: nn.Module) -> list[_Entry]:
    entries: list[_Entry] = []
    by_id: dict[int, _Entry] = {}
    modules = dict(model.named_modules(remove_duplicate=False))
    for module_name, module in modules.items():
        tables = ((True, module._parameters), (False, module._buffers))
        for is_param, table in tables:
            for name, tensor in table.items():
                if tensor is None:
                    continue
                clean = _clean_name(modules, module_name)
                key = f"{clean}.{name}" if clean else name
                first = by_id.get(id(tensor))
                if first is not None:
                    if (module, name) != (first.module, first.name) and key not in first.names():
                        first.aliases.append((module, name, key))
                    continue
                persistent = is_param or name not in module._non_persistent_buffers_set
                # What state_dict() calls it when a wrapped child is not stripped (activation checkpointing is).
                raw = ".".join(p for p in f"{module_name}.{name}".split(".") if p and p != _WRAPPER_SEGMENT)
                raw = "" if raw == key else raw
                by_id[id(tensor)] = _Entry(module_name, module, name, is_param, persistent, key, raw_key=raw)
                entries.append(by_id[id(tensor)])
    return entries


def _ancestors(module_name: str) -> list[str]:
    """``"a.b.c"`` → ``["", "a", "a.b", "a.b.c"]``: outermost first."""
    parts = module_name.split(".") if module_name else []
    return [".".join(parts[:i]) for i in range(len(parts) + 1)]


def _hook_owners(modules: Mapping[str, nn.Module], module_name: str, hook: str) -> list[str]:
    """Enclosing modules (``module_name`` itself included) that have ``hook``, outermost first; a wrapper's hooks
    do not reach into the child it wraps (``wrapped_child_name``)."""
    owners = []
    for name in _ancestors(module_name):
        module = modules.get(name)
        if module is None or not callable(getattr(module, hook, None)):
            continue
        child = _wrapped_child(module)
        inside = f"{name}.{child}" if name else child
        if child is None or not (module_name == inside or module_name.startswith(f"{inside}.")):
            owners.append(name)
    return owners


def _owner(modules: Mapping[str, nn.Module], module_name: str, hook: str) -> str | None:
    """The nearest enclosing module (``module_name`` itself included) that has ``hook``."""
    owners = _hook_owners(modules, module_name, hook)
    return owners[-1] if owners else None


def _relative(key: str, prefix: str) -> str | None:
    """``key`` relative to the module named ``prefix`` (both without wrapper segments), or None when outside it."""
    if not prefix:
        return key
    return key[len(prefix) + 1:] if key.startswith(f"{prefix}.") else None


def check_state_keys(model: nn.Module, keys: Iterable[str]) -> StateMismatchError | None:
    """The mismatch between ``keys`` and the model's state-dict keys (a tied weight needs any one of its names),
    or None when they fit."""
    keys = set(keys)
    entries = [e for e in _entries(model) if e.persistent]
    missing = [e.key for e in entries if not keys.intersection(e.names())]
    known = {k for e in entries for k in e.names()}
    unexpected = keys - known
    return StateMismatchError(missing, unexpected) if missing or unexpected else None


# -- materialising -------------------------------------------------------------------------------------------------
class _Sources:
    """Where values come from: the explicit ``state``, then ``initial_state()`` hooks, each called on first need."""

    def __init__(self, modules: Mapping[str, nn.Module], state: Mapping[str, Any] | None) -> None:
        self.modules = modules
        self.state = state
        self._loaded: dict[str, Mapping[str, Any]] = {}

    def explicit(self, entry: _Entry) -> torch.Tensor | None:
        if self.state is None:
            return None
        return next((self.state[k] for k in entry.names() if k in self.state), None)

    def initial(self, entry: _Entry) -> tuple[torch.Tensor, str] | None:
        for prefix in _hook_owners(self.modules, entry.module_name, "initial_state"):
            module = self.modules[prefix]
            if prefix not in self._loaded:
                self._loaded[prefix] = module.initial_state() or {}
            found = self._loaded[prefix]
            for key in entry.names():
                relative = _relative(key, _clean_name(self.modules, prefix))
                if relative is not None and relative in found:
                    where = _clean_name(self.modules, prefix) or type(module).__name__
                    return found[relative], f"initial_state() of {where}"
        return None


def _random_init(modules: Mapping[str, nn.Module], entry_module_name: str, module: nn.Module,
                 default_seed: int) -> dict[tuple[bool, str], torch.Tensor]:
    """Run the owner's ``init_module`` on CPU stand-ins for all of ``module``'s own tensors; their new values."""
    owner_name = _owner(modules, entry_module_name, "init_module")
    if owner_name is None:
        raise AssertionError("checked by the caller")
    owner = modules[owner_name]
    name = _relative(_clean_name(modules, entry_module_name), _clean_name(modules, owner_name)) or ""
    seed = getattr(owner, "init_seed", None)
    seed = default_seed if seed is None else int(seed)
    saved: dict[tuple[bool, str], torch.Tensor] = {}
    for is_param, table in ((True, module._parameters), (False, module._buffers)):
        for tname, tensor in table.items():
            if tensor is None:
                continue
            saved[(is_param, tname)] = tensor
            stand_in = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
            if stand_in.is_floating_point():
                stand_in.fill_(float("nan"))  # so a hook that forgets a tensor is caught below
            table[tname] = nn.Parameter(stand_in, requires_grad=False) if is_param else stand_in
    values: dict[tuple[bool, str], torch.Tensor] = {}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed_for(seed, name))
            owner.init_module(module, name)
        for is_param, tname in saved:
            table = module._parameters if is_param else module._buffers
            values[(is_param, tname)] = table[tname].detach()
    finally:
        for (is_param, tname), tensor in saved.items():
            (module._parameters if is_param else module._buffers)[tname] = tensor
    return values


def _local_part(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's slice of the full ``value`` of the DTensor ``like``."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset  # what DCP itself uses

    shape, offset = compute_local_shape_and_global_offset(like.shape, like.device_mesh, like.placements)
    return value[tuple(slice(o, o + s) for s, o in zip(shape, offset, strict=True))]


def _placed(value: torch.Tensor, like: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``value`` as ``like`` holds it: dtype, device and, for a DTensor, only the local shard (a fresh copy)."""
    from torch.distributed.tensor import DTensor

    if isinstance(like, DTensor):
        local = _local_part(value, like)
        fresh = torch.empty(local.shape, dtype=like.dtype, device=device).copy_(local)
        return DTensor.from_local(fresh, like.device_mesh, like.placements, shape=like.shape, stride=like.stride())
    placed = value.detach().to(device=device, dtype=like.dtype)  # no copy when both already match (mmap'd files)
    if placed.untyped_storage().nbytes() != placed.numel() * placed.element_size() or not placed.is_contiguous():
        # A view into a larger buffer (a gathered state dict): keeping it would keep the whole buffer alive, and
        # safetensors refuses to save tensors that share storage partially.
        placed = placed.clone(memory_format=torch.contiguous_format)
    return placed


def materialize(model: M, *, device: str | torch.device = "cpu", state: Mapping[str, Any] | None = None,
                strict: bool = False, seed: int | None = None) -> M:
    """Give every meta tensor of ``model`` its value on ``device`` (see the module docstring for where values come
    from); with ``state``, also copy it into tensors that are already real. ``strict``: ``state`` must hold every
    state-dict key and nothing else (``StateMismatchError`` otherwise). Returns ``model``."""
    with torch.device("cpu"):  # values are made on the CPU even inside a caller's `with torch.device("meta")`
        return _materialize(model, torch.device(device), state, strict, seed)


def _materialize(model: M, device: torch.device, state: Mapping[str, Any] | None, strict: bool,
                 seed: int | None) -> M:
    entries = _entries(model)
    if state is not None and strict:
        mismatch = check_state_keys(model, state)
        if mismatch is not None:
            raise mismatch
    if state is None and not any(_is_meta(e.tensor) for e in entries):
        return model
    modules = dict(model.named_modules(remove_duplicate=False))
    default_seed = seed if seed is not None else int(getattr(model, "init_seed", 0) or 0)
    sources = _Sources(modules, state)
    values: dict[int, torch.Tensor] = {}  # id(entry) → full value
    need_init: dict[str, list[_Entry]] = {}
    shapes: list[str] = []
    for entry in entries:
        meta = _is_meta(entry.tensor)
        # Non-persistent buffers (rotary frequencies) are in no state dict: they are always computed.
        found = sources.explicit(entry) if entry.persistent else None
        label = "state"
        if found is None and meta and entry.persistent:
            initial = sources.initial(entry)
            found, label = initial if initial is not None else (None, "")
        if found is None:
            if meta:
                need_init.setdefault(entry.module_name, []).append(entry)
            continue
        if tuple(found.shape) != tuple(entry.tensor.shape):
            shapes.append(f"{label}: {entry.key} {tuple(found.shape)} vs the model's {tuple(entry.tensor.shape)}")
        values[id(entry)] = found
    if shapes:
        raise StateMismatchError(shapes=shapes)
    orphans = [e.key for group in need_init.values() for e in group
               if _owner(modules, e.module_name, "init_module") is None]
    if orphans:
        raise UninitializableError(
            f"no value for {len(orphans)} meta tensor(s) ({_some(orphans)}): no state holds them and no enclosing "
            "module defines init_module(module, name); build that component eagerly or give it the hook")
    for module_name, group in need_init.items():
        fresh = _random_init(modules, module_name, group[0].module, default_seed)
        for entry in group:
            value = fresh[(entry.is_param, entry.name)]
            if value.is_floating_point() and bool(value.isnan().any()):
                owner = modules[_owner(modules, module_name, "init_module") or ""]
                raise UninitializableError(f"{type(owner).__name__}.init_module left {entry.key} uninitialised "
                                           f"(a {type(group[0].module).__name__})")
            values[id(entry)] = value
        del fresh
        _install(group, values, device)
    _install([e for e in entries if id(e) in values], values, device)
    return model


def _install(entries: list[_Entry], values: dict[int, torch.Tensor], device: torch.device) -> None:
    """Put each entry's value in place, freeing the full value as soon as it is placed."""
    from torch.distributed.tensor import DTensor

    sharded: dict[nn.Module, dict[str, torch.Tensor]] = {}
    for entry in entries:
        value = values.pop(id(entry), None)
        if value is None:
            continue
        tensor = entry.tensor
        placed = _placed(value, tensor, device)
        del value
        if not _is_meta(tensor):  # already real: only an explicit state gets here
            with torch.no_grad():
                (tensor.to_local() if isinstance(tensor, DTensor) else tensor).copy_(
                    placed.to_local() if isinstance(placed, DTensor) else placed)
            continue
        if not entry.is_param:
            entry.module._buffers[entry.name] = placed
        elif isinstance(placed, DTensor):
            sharded.setdefault(entry.module, {})[entry.name] = placed
        else:
            entry.module._parameters[entry.name] = nn.Parameter(placed, requires_grad=tensor.requires_grad)
        for module, name, _key in entry.aliases:  # tied weights stay one tensor
            if entry.is_param and not isinstance(placed, DTensor):
                module._parameters[name] = entry.module._parameters[entry.name]
            elif not entry.is_param:
                module._buffers[name] = placed
    for module, tensors in sharded.items():
        # load_state_dict's post-hooks let FSDP2 re-point its sharded storage at the new local tensors.
        module.load_state_dict(tensors, strict=False, assign=True)


__all__ = [
    "StateMismatchError",
    "UninitializableError",
    "build_on_meta",
    "building_on_meta",
    "check_state_keys",
    "has_meta_tensors",
    "materialize",
    "seed_for",
    "uninitializable",
]
