"""Adapters (``[train.adapter]``): parameter-efficient fine-tuning of a composed model, the core's half.

A kind (``lora``, ``dora``, ``qlora`` from prism-plugin-peft) knows how to adapt one layer; this module decides
which layers (``target`` minus ``exclude``, resolved over the model's parameter and module names: a pattern that
names nothing is a ``SpecError`` with its dotted path and the closest names), what trains (the adapter and
``fully_trained``; everything else is frozen), and what the adapted model's ``state_dict()`` holds: what trains
(with the buffers of the modules that train). The frozen base is a reference, rebuilt from where its weights come
from (pretrained files, ``model.init_from``, seeded initialisation), so checkpoints and saved adapters hold only
what changed, and a resume or a load rebuilds the base as it was.

Order, on a model still on the meta device (training) or a real one (``prism_core.load``): ``adapt`` → activation
checkpointing → the strategy's ``wrap`` (which materialises: sharded strategies each rank its shards) →
``ModelAdapter.after_materialize``. Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import difflib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prism_core.spec import ModelAdapterSpec, SpecError

if TYPE_CHECKING:
    import torch

    from prism_core.protocols import ModelAdapter

#: Segment activation-checkpoint wrappers add to parameter names (state dicts and patterns use names without it).
_CHECKPOINT_SEGMENT = "_checkpoint_wrapped_module"



@dataclass(frozen=True)
class _Adapted:
    """What ``adapt`` did to a model: its state-dict hooks (``merge`` removes them), the state-dict keys that train
    and, among them, the adapter's."""

    handles: tuple[Any, ...]
    trained: frozenset[str]
    adapter: frozenset[str]


_ADAPTED: weakref.WeakKeyDictionary[Any, _Adapted] = weakref.WeakKeyDictionary()


def clean_name(name: str) -> str:
    """A parameter name without activation-checkpoint wrapper segments."""
    return ".".join(part for part in name.split(".") if part != _CHECKPOINT_SEGMENT)


# -- which layers, which parameters --------------------------------------------------------------------------------
def _closest(pattern: str, names: Sequence[str], n: int = 3) -> str:
    close = difflib.get_close_matches(pattern, names, n=n, cutoff=0.0)
    return ", ".join(close)


def _pattern_names(model: torch.nn.Module) -> list[str]:
    """Every parameter name, also with the ``vision.`` / ``llm.`` aliases (what a closest-name hint offers)."""
    from prism_core.vlm import _PATTERN_ALIASES

    names = []
    for name, _ in model.named_parameters():
        names.append(name)
        names += [alias + name[len(full):] for full, alias in _PATTERN_ALIASES.items() if name.startswith(full)]
    return names


def _at(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def resolve_targets(model: torch.nn.Module, spec: ModelAdapterSpec, adapter: ModelAdapter,
                    path: str = "train.adapter", source: str = "spec") -> list[str]:
    """Names of the modules to adapt: those ``adapter`` supports whose module name, or one of whose own
    parameters' names, a ``target`` pattern matches and no ``exclude`` pattern does. Every pattern that names
    nothing, or nothing the kind can adapt, is a ``SpecError`` (all of them at once)."""
    targets, problems = _targets(model, spec, adapter, path)
    if problems:
        raise SpecError(problems, source)
    return targets


def _targets(model: torch.nn.Module, spec: ModelAdapterSpec, adapter: ModelAdapter,
             path: str) -> tuple[list[str], list[tuple[str, str]]]:
    from prism_core.vlm import matching_patterns

    problems: list[tuple[str, str]] = []
    chosen: dict[str, None] = {}
    modules = list(model.named_modules())
    own_params = {name: [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
                  for name, module in modules}
    for i, pattern in enumerate(spec.target):
        named = [name for name, _ in modules
                 if name and (matching_patterns(name, [pattern])
                              or any(matching_patterns(p, [pattern]) for p in own_params[name]))]
        if not named:
            problems.append((_at(path, f"target[{i}]"), f"{pattern!r} matches no parameter or module; closest "
                                                     f"parameter names: {_closest(pattern, _pattern_names(model))}"))
            continue
        supported = [name for name in named if adapter.supports(dict(modules)[name])]
        if not supported:
            problems.append((_at(path, f"target[{i}]"), f"{pattern!r} names no layer a {spec.kind!r} adapter can "
                                                     f"adapt (it names {', '.join(named[:4])}"
                                                     f"{' …' if len(named) > 4 else ''})"))
            continue
        chosen.update(dict.fromkeys(name for name in supported
                                    if not matching_patterns(name, spec.exclude)
                                    and not any(matching_patterns(p, spec.exclude) for p in own_params[name])))
    if not problems and not chosen:
        problems.append((_at(path, "exclude"), "excludes every layer the target patterns name"))
    return list(chosen), problems


def resolve_fully_trained(model: torch.nn.Module, spec: ModelAdapterSpec, targets: Sequence[str],
                          path: str = "train.adapter", source: str = "spec") -> list[str]:
    """Names of the parameters ``fully_trained`` names; a pattern that names none, or a parameter of an adapted
    layer (it cannot be both), is a ``SpecError``."""
    chosen, problems = _fully_trained(model, spec, targets, path)
    if problems:
        raise SpecError(problems, source)
    return chosen


def _fully_trained(model: torch.nn.Module, spec: ModelAdapterSpec, targets: Sequence[str],
                   path: str) -> tuple[list[str], list[tuple[str, str]]]:
    from prism_core.vlm import matching_patterns

    problems: list[tuple[str, str]] = []
    names = [name for name, _ in model.named_parameters()]
    chosen: dict[str, None] = {}
    for i, pattern in enumerate(spec.fully_trained):
        hits = [name for name in names if matching_patterns(name, [pattern])]
        if not hits:
            problems.append((_at(path, f"fully_trained[{i}]"), f"{pattern!r} matches no parameter; closest names: "
                                                            f"{_closest(pattern, _pattern_names(model))}"))
        adapted = [name for name in hits if any(name.startswith(f"{t}.") for t in targets)]
        if adapted:
            problems.append((_at(path, f"fully_trained[{i}]"), f"{pattern!r} names parameters of adapted layers "
                                                            f"({', '.join(adapted[:3])}): a layer is adapted or "
                                                            "trained in full, not both"))
        chosen.update(dict.fromkeys(hits))
    return list(chosen), problems


# -- adapting ------------------------------------------------------------------------------------------------------
def adapt(model: torch.nn.Module, spec: ModelAdapterSpec, *, seed: int = 0, path: str = "train.adapter",
          source: str = "spec") -> ModelAdapter:
    """Inject ``spec``'s adapter into ``model`` (a ``PrismVLM``, on the meta device or real) and freeze every
    parameter but the adapter's and ``fully_trained``'s. Components that train are put in train mode (the adapter's
    dropout), the others in eval mode. The model's ``adapter`` is the returned ``ModelAdapter``. A pattern that
    names nothing is a ``SpecError`` from ``source``, at ``path`` (the adapter table's dotted path there)."""
    import torch

    from prism_core.materialize import has_meta_tensors, materialize

    if getattr(model, "adapter", None) is not None:
        raise ValueError("this model already carries an adapter: merge it first (prism_core.adapters.merge)")
    adapter = spec.build(seed=seed)
    targets, problems = _targets(model, spec, adapter, path)
    fully_trained, more = _fully_trained(model, spec, targets, path)
    if problems or more:
        raise SpecError(problems + more, source)
    base_is_real = not has_meta_tensors(model)
    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    model.requires_grad_(False)
    adapter_params = adapter.inject(model, targets)
    params = dict(model.named_parameters())
    for name in [*adapter_params, *fully_trained]:
        params[name].requires_grad_(True)
    for child in model.children():
        child.train(any(p.requires_grad for p in child.parameters()))
    model.adapter = adapter
    _keep_only_trained_state(model, adapter_params)
    if base_is_real or not _meta_outside_adapter(model, adapter_params):
        materialize(model, device=device)  # the adapter's own parameters, through their init_module hooks
    return adapter


def _meta_outside_adapter(model: torch.nn.Module, adapter_params: Sequence[str]) -> bool:
    own = set(adapter_params)
    return any(p.is_meta for name, p in model.named_parameters() if name not in own)


def _keep_only_trained_state(model: torch.nn.Module, adapter_params: Sequence[str]) -> None:
    """``state_dict()`` of the adapted model: the parameters that train and the buffers of the modules holding
    them; ``load_state_dict`` accepts such a state as complete (the frozen base is rebuilt from its sources)."""
    state = model.state_dict(keep_vars=True)
    trained_ids = {id(p) for p in model.parameters() if p.requires_grad}
    holders = {id(m) for m in model.modules() if any(id(p) in trained_ids for p in m.parameters(recurse=False))}
    buffer_ids = {id(b) for m in model.modules() if id(m) in holders for b in m.buffers(recurse=False)}
    keep = frozenset(key for key, value in state.items() if id(value) in trained_ids | buffer_ids)
    frozen = frozenset(state) - keep

    def drop_frozen(module: Any, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):] in frozen]:
            del state_dict[key]

    def accept_missing_frozen(module: Any, incompatible: Any) -> None:
        missing = incompatible.missing_keys
        missing[:] = [k for k in missing if not _is_frozen(clean_name(k), frozen)]

    handles = (model.register_state_dict_post_hook(drop_frozen),
               model.register_load_state_dict_post_hook(accept_missing_frozen))
    _ADAPTED[model] = _Adapted(handles, keep, frozenset(adapter_params))


def _is_frozen(key: str, frozen: frozenset[str]) -> bool:
    """``key`` (maybe under a wrapper's prefix, e.g. DDP's ``module.``) is one of the frozen base keys."""
    while True:
        if key in frozen:
            return True
        if "." not in key:
            return False
        key = key.split(".", 1)[1]


def trained_keys(model: torch.nn.Module) -> frozenset[str]:
    """The state-dict keys an adapted model trains (and saves)."""
    return _ADAPTED[model].trained


def adapter_keys(model: torch.nn.Module) -> frozenset[str]:
    """The adapter's state-dict keys, among ``trained_keys`` (the others are trained in full)."""
    return _ADAPTED[model].adapter


def fully_trained_learning_rates(model: torch.nn.Module, spec: ModelAdapterSpec) -> dict[str, float]:
    """Parameter name (as ``model`` names it now, wrapped or not) → ``fully_trained_learning_rate`` for the
    fully trained parameters, when the spec sets one (the optimizer gives them groups of their own)."""
    from prism_core.vlm import matching_patterns

    if spec.fully_trained_learning_rate is None:
        return {}
    return {name: spec.fully_trained_learning_rate for name, p in model.named_parameters()
            if p.requires_grad and matching_patterns(clean_name(name), spec.fully_trained)}


def merge(model: torch.nn.Module) -> torch.nn.Module:
    """Fold the model's adapter into its base weights, in place: the result is a plain model of the base
    architecture (saved in full by ``prism_core.save``) that computes what the adapted one did."""
    adapter = getattr(model, "adapter", None)
    if adapter is None:
        raise ValueError("this model carries no adapter")
    adapter.merge(model)
    for handle in _ADAPTED.pop(model).handles:
        handle.remove()
    model.adapter = None
    return model


@contextlib.contextmanager
def disabled(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block the model computes as its base, the adapter switched off (what it forgot, or did not)."""
    adapter = getattr(model, "adapter", None)
    if adapter is None:
        raise ValueError("this model carries no adapter")
    with adapter.disabled(model):
        yield


def load_adapter_spec(text: str, source: str) -> ModelAdapterSpec:
    """An ``adapter.toml`` (a ``[train.adapter]`` table) as a spec, every problem at once."""
    from prism_core.spec import structure, tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([("", f"invalid TOML: {exc}")], source) from None
    return structure(data, ModelAdapterSpec, source)


__all__ = [
    "adapt",
    "adapter_keys",
    "clean_name",
    "disabled",
    "fully_trained_learning_rates",
    "load_adapter_spec",
    "merge",
    "resolve_fully_trained",
    "resolve_targets",
    "trained_keys",
]
