"""Typed specs: TOML → frozen attrs objects through one strict cattrs converter.

A run spec has one table per role; each role table's ``kind`` names a registered spec class (see
``prism_core.registry``), optionally starting from one of that class's named ``presets`` and overriding it field by
field. Every problem in a spec is collected and reported at once with its dotted path; nothing is coerced (``"no"``
is not a bool, ``3.9`` is not an int). Importing this module does not import torch: spec classes import their
implementations inside ``build``.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, get_args, get_origin

import attrs
import cattrs
import cattrs.gen
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from prism_core.registry import PluginError, get_registry
from prism_core.types import Role

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from prism_core import protocols

SCHEMA_VERSION = 1

#: Migrations from schema N to N + 1, applied in order to older specs (raw TOML tables in, tables out).
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def spec_field(default: Any = attrs.NOTHING, *, help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """An attrs field with ``help`` text (shown by ``prism plugins --show`` and in docs)."""
    if factory is not None:
        return attrs.field(factory=factory, metadata={"help": help})
    return attrs.field(default=default, metadata={"help": help})


# -- component specs ----------------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ComponentSpec:
    """Base of every component spec. Subclasses are ``@attrs.frozen(kw_only=True)`` and set ``kind``.

    ``presets`` maps a preset name to field values (data, not subclasses); a spec table that says
    ``preset = "name"`` starts from those values. ``problems()`` yields ``(field, message)`` pairs for checks
    that involve more than one field's type (e.g. an image size the patch size does not divide).
    """

    role: ClassVar[Role]
    kind: ClassVar[str] = ""
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    preset: str | None = spec_field(None, help="the named preset this spec started from")

    def problems(self) -> Iterable[tuple[str, str]]:
        return ()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ComponentSpec:
        """Python twin of ``preset = "name"`` in TOML: the preset's values, then ``overrides``."""
        return structure_component({"kind": cls.kind, "preset": name, **overrides}, ROLE_BASES[cls.role])


@attrs.frozen(kw_only=True)
class VisionBackboneSpec(ComponentSpec):
    role: ClassVar[Role] = Role.VISION_BACKBONE

    def build(self) -> protocols.VisionBackbone:
        raise NotImplementedError

    @property
    def num_patches(self) -> int | None:
        """Patch count if known without building (fusion checks members agree at spec time)."""
        return None


@attrs.frozen(kw_only=True)
class LLMBackboneSpec(ComponentSpec):
    role: ClassVar[Role] = Role.LLM_BACKBONE

    def build(self) -> protocols.LLMBackbone:
        raise NotImplementedError

    def build_tokenizer(self) -> Any:
        """The tokenizer alone, without the weights (data pipelines need only this)."""
        raise NotImplementedError

    @property
    def default_prompt_format(self) -> str:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class ProjectorSpec(ComponentSpec):
    role: ClassVar[Role] = Role.PROJECTOR

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> protocols.Projector:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class PromptFormatSpec(ComponentSpec):
    role: ClassVar[Role] = Role.PROMPT_FORMAT

    def build(self, tokenizer: Any = None) -> protocols.PromptFormat:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class DatasetSpec(ComponentSpec):
    role: ClassVar[Role] = Role.DATASET

    def build(
        self, *, tokenizer: Any, prompt_format: protocols.PromptFormat, image_transform: Any, split: str = "train"
    ) -> protocols.Dataset:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class TrainStrategySpec(ComponentSpec):
    role: ClassVar[Role] = Role.TRAIN_STRATEGY

    def build(self) -> protocols.TrainStrategy:
        raise NotImplementedError


ROLE_BASES: dict[Role, type[ComponentSpec]] = {
    Role.VISION_BACKBONE: VisionBackboneSpec,
    Role.LLM_BACKBONE: LLMBackboneSpec,
    Role.PROJECTOR: ProjectorSpec,
    Role.PROMPT_FORMAT: PromptFormatSpec,
    Role.DATASET: DatasetSpec,
    Role.TRAIN_STRATEGY: TrainStrategySpec,
}


# -- run specs ------------------------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ModelSpec:
    vision: VisionBackboneSpec
    llm: LLMBackboneSpec
    projector: ProjectorSpec
    prompt_format: PromptFormatSpec | None = spec_field(None, help="defaults to the LLM's own prompt format")
    seed: int = spec_field(0, help="seed for the projector (and any randomly initialised backbone)")
    init_from: str | None = spec_field(None, help="warm start: directory of a saved prism model")


Stage = Literal["align", "finetune", "full-finetune"]

#: The original recipe's defaults per stage; a train table's missing fields are filled from here.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "align": {"global_batch_size": 256, "learning_rate": 1e-3, "weight_decay": 0.0, "epochs": 1},
    "finetune": {"global_batch_size": 128, "learning_rate": 2e-5, "weight_decay": 0.1, "epochs": 1},
    "full-finetune": {"global_batch_size": 128, "learning_rate": 2e-5, "weight_decay": 0.1, "epochs": 1},
}


@attrs.frozen(kw_only=True)
class TrainSpec:
    stage: Stage = spec_field("finetune", help="align: projector only; finetune: projector + LLM; full-finetune: all")
    trainable: tuple[str, ...] | None = spec_field(
        None, help="glob patterns over parameter names that replace the stage's choice, e.g. ['projector.*']"
    )
    epochs: int = spec_field(1, help="passes over the data")
    max_steps: int | None = spec_field(None, help="stop after this many optimizer steps")
    global_batch_size: int = spec_field(128, help="examples per optimizer step over all ranks")
    per_device_batch_size: int = spec_field(16, help="examples per micro-batch on one rank")
    learning_rate: float = spec_field(2e-5, help="peak learning rate")
    weight_decay: float = spec_field(0.1, help="AdamW weight decay (not applied to biases and norms)")
    lr_schedule: Literal["linear-warmup+cosine-decay", "constant"] = spec_field("linear-warmup+cosine-decay")
    warmup_ratio: float = spec_field(0.03, help="fraction of steps spent warming up")
    max_grad_norm: float = spec_field(1.0, help="gradient clipping threshold")
    precision: Literal["fp32", "bf16"] = spec_field("bf16", help="bf16 autocast, or plain fp32")
    activation_checkpointing: bool = spec_field(False, help="recompute LLM decoder layers in backward")
    seed: int = spec_field(7, help="seed for data order and initialisation")
    output_dir: str = spec_field("runs", help="runs are written to OUTPUT_DIR/RUN_NAME")
    run_name: str | None = spec_field(None, help="defaults to the spec's name plus a timestamp")
    save_every: int | None = spec_field(None, help="checkpoint every N optimizer steps (and at the end)")
    keep_last: int = spec_field(2, help="periodic checkpoints to keep")
    log_every: int = spec_field(1, help="write metrics every N optimizer steps")
    trackers: tuple[str, ...] = spec_field(("jsonl",), help="metric trackers: jsonl, wandb, tensorboard")
    strategy: TrainStrategySpec | None = spec_field(None, help="how ranks share the work; None = kind 'single'")
    max_length: int = spec_field(2048, help="token budget per row, image patches included (the original's 2048)")
    num_workers: int = spec_field(2, help="data-loading worker processes per rank (0: load in the main process)")
    peak_tflops: float | None = spec_field(
        None, help="peak TFLOP/s of one device for the MFU estimate; None: looked up for known GPUs"
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        for name in ("epochs", "global_batch_size", "per_device_batch_size", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                yield name, f"must be >= 1, got {getattr(self, name)}"
        if self.global_batch_size % self.per_device_batch_size:
            yield "global_batch_size", (
                f"must be a multiple of per_device_batch_size ({self.per_device_batch_size}), "
                f"got {self.global_batch_size}"
            )
        if not 0 <= self.warmup_ratio < 1:
            yield "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}"
        if self.learning_rate <= 0:
            yield "learning_rate", f"must be > 0, got {self.learning_rate}"
        if self.num_workers < 0:
            yield "num_workers", f"must be >= 0, got {self.num_workers}"
        if self.max_steps is not None and self.max_steps < 1:
            yield "max_steps", f"must be >= 1, got {self.max_steps}"
        if self.save_every is not None and self.save_every < 1:
            yield "save_every", f"must be >= 1, got {self.save_every}"


@attrs.frozen(kw_only=True)
class EvalSpec:
    data: DatasetSpec | None = spec_field(None, help="held-out data; defaults to the train data's test split")
    split: str = spec_field("test", help="split of the data to evaluate")
    max_examples: int | None = spec_field(None, help="evaluate at most this many examples")
    batch_size: int = spec_field(64, help="examples per generation batch")
    max_new_tokens: int = spec_field(8, help="tokens generated per answer")


@attrs.frozen(kw_only=True)
class RunSpec:
    schema: int = spec_field(SCHEMA_VERSION, help="spec format version")
    model: ModelSpec
    data: DatasetSpec | None = None
    train: TrainSpec = spec_field(factory=TrainSpec)
    eval: EvalSpec | None = None


# -- errors -------------------------------------------------------------------------------------------------------
class SpecError(Exception):
    """Every problem of a spec, each ``(dotted.path, message)``; ``str()`` lists them all."""

    def __init__(self, problems: Sequence[tuple[str, str]], source: str = "spec") -> None:
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        lines = [f"{source}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  {path}: {message}" if path else f"  {message}" for path, message in self.problems]
        super().__init__("\n".join(lines))


class _Problem(ValueError):
    """A structuring problem whose message is already user-facing."""


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


# -- the converter ------------------------------------------------------------------------------------------------
def _strict(expected: type, accept: tuple[type, ...]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if type(value) not in accept:
            raise _Problem(f"expected {expected.__name__}, got {_describe(value)}")
        return expected(value)

    return hook


def _structure_literal(value: Any, literal: Any) -> Any:
    choices = get_args(literal)
    if value not in choices or type(value) is not type(choices[0]):
        raise _Problem(f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _is_sequence(t: Any) -> bool:
    return get_origin(t) in (tuple, list, Sequence) and t is not str


def _structure_sequence(value: Any, t: Any) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Problem(f"expected an array, got {_describe(value)}")
    args = [a for a in get_args(t) if a is not Ellipsis] or [Any]
    errors, out = [], []
    for i, item in enumerate(value):
        try:
            out.append(converter.structure(item, args[0]))
        except Exception as exc:
            exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"@ index {i}", i, args[0])]
            errors.append(exc)
    if errors:
        raise IterableValidationError("While structuring an array", errors, t)
    return tuple(out)


def _structure_optional(value: Any, t: Any) -> Any:
    (inner,) = [a for a in get_args(t) if a is not type(None)]
    return None if value is None else converter.structure(value, inner)


def _is_optional(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is Union and type(None) in args and len(args) == 2


def structure_component(value: Any, base: type[ComponentSpec]) -> ComponentSpec:
    """Structure a role table: resolve ``kind`` (or find the kind by ``preset``), apply the preset, then fields."""
    if isinstance(value, ComponentSpec):
        return value
    if isinstance(value, str):  # shorthand: `vision = "siglip-vit-so400m"` names a preset
        value = {"preset": value}
    if not isinstance(value, Mapping):
        raise _Problem(f"expected a table with a 'kind', got {_describe(value)}")
    data = dict(value)
    registry = get_registry()
    role = base.role
    kind, preset = data.pop("kind", None), data.get("preset")
    if kind is None:
        if preset is None:
            raise _Problem(f"missing 'kind' (installed {role.label} kinds: "
                           f"{', '.join(i.kind for i in registry.kinds(role)) or 'none'})")
        matches = registry.find_preset(role, preset)
        if len(matches) != 1:
            where = f"kinds {', '.join(matches)} all define it" if matches else "no installed kind defines it"
            raise _Problem(f"cannot tell the kind of {role.label} preset {preset!r}: {where}; add kind = \"...\"")
        kind = matches[0]
    if type(kind) is not str:
        raise _Problem(f"'kind' must be a string, got {_describe(kind)}")
    try:
        spec_class = registry.resolve(role, kind)
    except PluginError as exc:
        raise _Problem(str(exc)) from exc
    if preset is not None:
        if type(preset) is not str or preset not in spec_class.presets:
            names = sorted(spec_class.presets)
            close = difflib.get_close_matches(str(preset), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _Problem(f"unknown preset {preset!r} for kind {kind!r} (presets: {', '.join(names) or 'none'}){hint}")
        data = {**spec_class.presets[preset], **data}
    return converter.structure(data, spec_class)


def _make_train_hook(conv: cattrs.Converter) -> Callable[[Any, Any], TrainSpec]:
    base = cattrs.gen.make_dict_structure_fn(TrainSpec, conv, _cattrs_forbid_extra_keys=True)

    def hook(value: Any, _: Any) -> TrainSpec:
        if isinstance(value, Mapping):  # fields the table leaves out come from its stage's recipe
            stage = value.get("stage", "finetune")
            value = {**STAGE_DEFAULTS.get(stage, {}), "strategy": {"kind": "single"}, **value}
        return base(value, TrainSpec)

    return hook


def _unstructure_component(spec: ComponentSpec) -> dict[str, Any]:
    return {"kind": spec.kind, **_unstructure_attrs(spec)}


def _unstructure_attrs(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in attrs.fields(type(obj)):
        value = getattr(obj, f.name)
        if value is not None:  # TOML has no null: None means "the default", which is None
            out[f.name] = converter.unstructure(value)
    return out


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(bool, _strict(bool, (bool,)))
    conv.register_structure_hook(int, _strict(int, (int,)))
    conv.register_structure_hook(float, _strict(float, (int, float)))
    conv.register_structure_hook(str, _strict(str, (str,)))
    conv.register_structure_hook_func(lambda t: get_origin(t) is Literal, _structure_literal)
    conv.register_structure_hook_func(_is_sequence, _structure_sequence)
    conv.register_structure_hook_func(_is_optional, _structure_optional)
    # Exact-type predicates: a hook on the base class must not also catch the concrete subclasses.
    conv.register_structure_hook_func(lambda t: t in ROLE_BASES.values(), structure_component)
    conv.register_structure_hook(TrainSpec, _make_train_hook(conv))
    # Later registrations win in cattrs: the generic attrs hook first, the component one (adds `kind`) after.
    conv.register_unstructure_hook_func(attrs.has, _unstructure_attrs)
    conv.register_unstructure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, ComponentSpec), _unstructure_component
    )
    conv.register_unstructure_hook(tuple, lambda t: [conv.unstructure(x) for x in t])
    return conv


converter = _make_converter()


def _flatten(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    """Turn cattrs' nested exception groups into ``(dotted path, message)`` pairs."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, AttributeValidationNote):
                    sub_path = f"{path}.{note.name}" if path else note.name
                elif isinstance(note, IterableValidationNote):
                    sub_path = f"{path}[{note.index}]"
            yield from _flatten(sub, sub_path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        known = [f.name for f in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (fields: {', '.join(known)})"
            yield (f"{path}.{key}" if path else key), f"unknown field{hint}"
    elif isinstance(exc, KeyError):
        yield path, "required field missing"
    else:
        yield path, str(exc)


def _semantic_problems(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    """``problems()`` of every spec in the tree, prefixed with its path."""
    if not attrs.has(type(obj)):
        return
    if hasattr(obj, "problems"):
        for field_name, message in obj.problems():
            yield (f"{path}.{field_name}" if path else field_name), message
    for f in attrs.fields(type(obj)):
        value = getattr(obj, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if isinstance(value, tuple):
            for i, item in enumerate(value):
                yield from _semantic_problems(item, f"{sub}[{i}]")
        else:
            yield from _semantic_problems(value, sub)


def structure(data: Mapping[str, Any], cls: type = RunSpec, source: str = "spec") -> Any:
    """Structure raw TOML tables into ``cls``, raising one ``SpecError`` with every problem."""
    try:
        obj = converter.structure(dict(data), cls)
    except Exception as exc:
        raise SpecError(list(_flatten(exc, "")), source) from None
    problems = list(_semantic_problems(obj, ""))
    if problems:
        raise SpecError(problems, source)
    return obj


# -- TOML in and out ----------------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value); the value is parsed as TOML, else taken as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpecError([("", f"override {text!r} is not of the form dotted.key=value")], "command line")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [part.strip() for part in key.split(".")], value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        table = data
        for i, key in enumerate(keys[:-1]):
            nxt = table.get(key)
            if isinstance(nxt, str):  # a preset shorthand grows into a table
                nxt = {"preset": nxt}
            if nxt is None:
                nxt = {}
            if not isinstance(nxt, dict):
                raise SpecError([(".".join(keys[: i + 1]), f"is a {type(nxt).__name__}, not a table")],
                                "command line")
            table[key] = nxt
            table = nxt
        table[keys[-1]] = value
    return data


def migrate(data: dict[str, Any], source: str = "spec") -> dict[str, Any]:
    """Bring a raw spec to the current schema, refusing newer ones."""
    version = data.get("schema")
    if version is None:
        raise SpecError([("schema", f"required field missing: start the spec with `schema = {SCHEMA_VERSION}`")],
                        source)
    if type(version) is not int or version < 0:
        raise SpecError([("schema", f"expected a non-negative int, got {_describe(version)}")], source)
    if version > SCHEMA_VERSION:
        raise SpecError([("schema", f"this spec uses schema {version}, but this prism-core reads schema "
                                    f"{SCHEMA_VERSION} and older: upgrade prism-core")], source)
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise SpecError([("schema", f"no migration from schema {version}")], source)
        data = MIGRATIONS[version](data)
        version += 1
        data["schema"] = version
    return data


def read_spec_text(name_or_path: str | Path) -> tuple[str, str]:
    """(TOML text, source label) of a spec file path or a named spec (``quickstart``, a model id)."""
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    text = get_registry().spec_text(str(name_or_path))
    if text is not None:
        return text, f"<spec {name_or_path}>"
    names = get_registry().spec_names()
    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SpecError([("", f"no such file, and no named spec {str(name_or_path)!r} "
                          f"(named specs: {', '.join(names) or 'none'}){hint}")], str(name_or_path))


def load_spec(name_or_path: str | Path, overrides: Iterable[str] = (), cls: type = RunSpec) -> Any:
    """Read, migrate, override and structure a spec file or named spec."""
    text, source = read_spec_text(name_or_path)
    return loads_spec(text, overrides, cls, source)


def loads_spec(text: str, overrides: Iterable[str] = (), cls: type = RunSpec, source: str = "spec") -> Any:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([("", f"invalid TOML: {exc}")], source) from None
    data = apply_overrides(data, overrides)
    if cls is RunSpec:
        data = migrate(data, source)
    return structure(data, cls, source)


def to_dict(spec: Any) -> dict[str, Any]:
    return converter.unstructure(spec)


def dumps_spec(spec: Any) -> str:
    """The spec as TOML with every default filled in; ``loads_spec(dumps_spec(s)) == s``."""
    import tomli_w

    return tomli_w.dumps(to_dict(spec))
