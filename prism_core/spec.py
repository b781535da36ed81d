"""Typed specs: TOML → frozen attrs objects through one strict cattrs converter.

A run spec has one table per role; each role table's ``kind`` names a registered spec class (see
``prism_core.registry``), optionally starting from one of that class's named ``presets`` and overriding it field by
field. Every problem in a spec is collected and reported at once with its dotted path; nothing is coerced (``"no"``
is not a bool, ``3.9`` is not an int). Importing this module does not import torch: spec classes import their
implementations inside ``build``.
"""

from __future__ import annotations

import difflib
import math
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


def spec_field(
    default: Any = attrs.NOTHING,
    *,
    help: str = "",
    factory: Callable[[], Any] | None = None,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
) -> Any:
    """An attrs field with ``help`` text (shown by ``prism plugins show KIND`` and in docs) and, for a number (or a
    tuple of numbers), its range: ``at_least`` / ``above`` / ``at_most``. Every spec's declared ranges are checked
    with its ``problems()`` (``None`` — not set — and non-finite floats are handled: a float must be finite)."""
    metadata: dict[str, Any] = {"help": help}
    bounds = {name: value for name, value in (("at_least", at_least), ("above", above), ("at_most", at_most))
              if value is not None}
    if bounds:
        metadata["range"] = bounds
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


#: The range of every seed field: what torch.manual_seed accepts.
SEED_RANGE = {"at_least": 0, "at_most": 2**63 - 1}


def range_problems(spec: Any) -> Iterator[tuple[str, str]]:
    """``(field, message)`` for each value outside the range its field declares (``spec_field(at_least=...)``)."""
    for f in attrs.fields(type(spec)):
        bounds = f.metadata.get("range")
        value = getattr(spec, f.name)
        if not bounds or value is None:
            continue
        items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
        for index, item in items:
            message = _out_of_range(item, bounds)
            if message:
                yield (f.name if index is None else f"{f.name}[{index}]"), message


def _out_of_range(value: Any, bounds: Mapping[str, float]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be finite, got {value}"
    low, above, high = bounds.get("at_least"), bounds.get("above"), bounds.get("at_most")
    if not ((low is not None and value < low) or (above is not None and value <= above)
            or (high is not None and value > high)):
        return None
    if low is not None and high is not None:
        return f"must be in [{low}, {_number(high)}], got {value}"
    parts = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
             f"<= {_number(high)}" if high is not None else ""]
    return f"must be {' and '.join(p for p in parts if p)}, got {value}"


def _number(value: float) -> str:
    return "2**63 - 1" if value == 2**63 - 1 else str(value)


def field_help(field: attrs.Attribute) -> str:
    """The ``help`` a field was declared with (``""`` for a plain attrs field)."""
    return field.metadata.get("help", "")


# -- component specs ----------------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ComponentSpec:
    """Base of every component spec. Subclasses are ``@attrs.frozen(kw_only=True)`` and set ``kind``.

    ``presets`` maps a preset name to field values (data, not subclasses); a spec table that says
    ``preset = "name"`` starts from those values. ``problems()`` yields ``(field, message)`` pairs for checks
    that involve more than one field's type (e.g. an image size the patch size does not divide), and for the
    range of every numeric field.
    """

    role: ClassVar[Role]
    kind: ClassVar[str] = ""
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Fields a kind no longer has → what to do instead (said when an old spec still sets one).
    moved_fields: ClassVar[Mapping[str, str]] = {}

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

    @property
    def supports_packing(self) -> bool:
        """Whether the built backbone keeps the examples packed into one row apart (``LLMBackbone.supports_packing``);
        ``train.packing`` with one that does not is a spec error, never silent cross-attention."""
        return False


@attrs.frozen(kw_only=True)
class ProjectorSpec(ComponentSpec):
    role: ClassVar[Role] = Role.PROJECTOR

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> protocols.Projector:
        raise NotImplementedError

    def num_tokens(self, num_patches: int) -> int:
        """Image tokens the built projector makes of ``num_patches`` patch features, known without building
        (``prism data check`` budgets with it); must equal the module's ``num_tokens``. Default: one per patch."""
        return num_patches

    def patch_problems(self, num_patches: int) -> Iterable[tuple[str, str]]:
        """``(field, message)`` for a patch count this projector cannot take (a grid its ratio does not divide),
        reported at ``model.projector.<field>`` when the vision spec knows its count, else when the model is
        built."""
        return ()


@attrs.frozen(kw_only=True)
class PromptFormatSpec(ComponentSpec):
    role: ClassVar[Role] = Role.PROMPT_FORMAT

    def build(self, tokenizer: Any = None) -> protocols.PromptFormat:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class DatasetSpec(ComponentSpec):
    """A data set. The training stage is said once, in ``train.stage``, and reaches ``build`` (a data set whose
    content depends on it, such as LLaVA's align captions and finetune conversations, picks by it)."""

    role: ClassVar[Role] = Role.DATASET

    def build(
        self, *, tokenizer: Any, prompt_format: protocols.PromptFormat, image_transform: Any, split: str = "train",
        stage: str = "finetune",
    ) -> protocols.Dataset:
        raise NotImplementedError

    def stage_problems(self, stage: str) -> Iterable[tuple[str, str]]:
        """``(field, message)`` for what this data lacks to train ``stage`` (checked with the run spec)."""
        return ()


@attrs.frozen(kw_only=True)
class TrainStrategySpec(ComponentSpec):
    role: ClassVar[Role] = Role.TRAIN_STRATEGY

    def build(self) -> protocols.TrainStrategy:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class EvalTaskSpec(ComponentSpec):
    """A benchmark to evaluate on. ``root`` is the data root the evaluation was given (``prism eval --root``,
    ``eval.root``), under which a kind finds its files unless its own fields say otherwise."""

    role: ClassVar[Role] = Role.EVAL_TASK

    def build(self, *, root: str | None = None) -> protocols.EvalTask:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class ModelAdapterSpec(ComponentSpec):
    """Parameter-efficient fine-tuning (``[train.adapter]``): an adapter injected into the supported layers that
    ``target`` names (and ``exclude`` does not), trained with the parameters ``fully_trained`` names; every other
    weight is frozen and saved only as a reference to where it came from. Patterns are those of
    ``train.trainable`` (globs over parameter names, ``vision.``/``llm.`` for the backbones); a layer is named by its
    module name or its weight's name. The fields every kind shares are here; kinds add their own (rank, scale)."""

    role: ClassVar[Role] = Role.MODEL_ADAPTER

    target: tuple[str, ...] = spec_field(
        ("llm.*",), help="patterns naming the layers to adapt (those the kind supports: LoRA adapts linear layers)")
    exclude: tuple[str, ...] = spec_field(("*lm_head*",), help="patterns of layers never adapted")
    fully_trained: tuple[str, ...] = spec_field(
        ("projector.*",), help="patterns of parameters trained in full beside the adapter (the projector)")
    fully_trained_learning_rate: float | None = spec_field(
        None, above=0, help="peak learning rate of the fully trained parameters (default: train.learning_rate)")

    def build(self, *, seed: int = 0) -> protocols.ModelAdapter:
        raise NotImplementedError

    def train_problems(self, train: TrainSpec) -> Iterable[tuple[str, str]]:
        """``(field of [train], message)`` for what this kind cannot train with (a strategy, a precision)."""
        return ()


ROLE_BASES: dict[Role, type[ComponentSpec]] = {
    Role.VISION_BACKBONE: VisionBackboneSpec,
    Role.LLM_BACKBONE: LLMBackboneSpec,
    Role.PROJECTOR: ProjectorSpec,
    Role.PROMPT_FORMAT: PromptFormatSpec,
    Role.DATASET: DatasetSpec,
    Role.TRAIN_STRATEGY: TrainStrategySpec,
    Role.EVAL_TASK: EvalTaskSpec,
    Role.MODEL_ADAPTER: ModelAdapterSpec,
}


# -- run specs ------------------------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ModelSpec:
    vision: VisionBackboneSpec
    llm: LLMBackboneSpec
    projector: ProjectorSpec
    prompt_format: PromptFormatSpec | None = spec_field(None, help="defaults to the LLM's own prompt format")
    seed: int = spec_field(0, **SEED_RANGE, help="seed for the projector (and any randomly initialised backbone)")
    init_from: str | None = spec_field(None, help="warm start: directory of a saved prism model")

    def problems(self) -> Iterator[tuple[str, str]]:
        num_patches = self.vision.num_patches
        if num_patches is not None:
            for name, message in self.projector.patch_problems(num_patches):
                yield f"projector.{name}" if name else "projector", message

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
    epochs: int = spec_field(1, at_least=1, help="passes over the data")
    max_steps: int | None = spec_field(None, at_least=1, help="stop after this many optimizer steps")
    global_batch_size: int = spec_field(128, at_least=1, help="examples per optimizer step over all ranks")
    per_device_batch_size: int = spec_field(16, at_least=1, help="examples per micro-batch on one rank")
    learning_rate: float = spec_field(2e-5, above=0, help="peak learning rate")
    weight_decay: float = spec_field(0.1, at_least=0, help="AdamW weight decay (not applied to biases and norms)")
    lr_schedule: Literal["linear-warmup+cosine-decay", "constant"] = spec_field("linear-warmup+cosine-decay")
    warmup_ratio: float = spec_field(0.03, at_least=0, help="fraction of steps spent warming up")
    max_grad_norm: float = spec_field(1.0, above=0, help="gradient clipping threshold")
    precision: Literal["fp32", "bf16"] = spec_field("bf16", help="bf16 autocast, or plain fp32")
    activation_checkpointing: bool = spec_field(False, help="recompute LLM decoder layers in backward")
    seed: int = spec_field(7, **SEED_RANGE, help="seed for data order and initialisation")
    output_dir: str = spec_field("runs", help="runs are written to OUTPUT_DIR/RUN_NAME")
    run_name: str | None = spec_field(None, help="defaults to the spec's name plus a timestamp")
    save_every: int | None = spec_field(None, at_least=1, help="checkpoint every N optimizer steps (and at the end)")
    keep_last: int = spec_field(2, at_least=1, help="periodic checkpoints to keep")
    log_every: int = spec_field(1, at_least=1, help="write metrics every N optimizer steps")
    trackers: tuple[str, ...] = spec_field(("jsonl",), help="metric trackers: jsonl, wandb, tensorboard")
    strategy: TrainStrategySpec | None = spec_field(None, help="how ranks share the work; None = kind 'single'")
    max_length: int = spec_field(
        2048, at_least=1, help="token budget per row, image patches included (the original's 2048)")
    num_workers: int = spec_field(
        2, at_least=0, help="data-loading worker processes per rank (0: load in the main process)")
    peak_tflops: float | None = spec_field(
        None, above=0, help="peak TFLOP/s of one device for the MFU estimate; None: looked up for known GPUs"
    )
    validate_every: int | None = spec_field(
        None, at_least=1, help="evaluate the data's validation_split every N optimizer steps (exact match per "
                               "question type, logged as validation/...; prism_core.train.validation)"
    )
    validation_split: str = spec_field("validation", help="split of [data] that validate_every evaluates")
    stop_when: tuple[str, ...] = spec_field(
        (), help="stop at the first validation where every condition holds, e.g. "
                 "['validation/by_type/*/accuracy >= 0.97']; max_steps / epochs stay the budget"
    )
    adapter: ModelAdapterSpec | None = spec_field(
        None, help="parameter-efficient fine-tuning: train an adapter (kind 'lora', ...) on the frozen model"
    )
    packing: bool = spec_field(
        False, help="pack several examples into each row of max_length positions (image tokens counted), each "
                    "kept apart: far less padding (prism_core.data.packing)")
    compile: bool = spec_field(False, help="run the LLM decoder layers and vision blocks under torch.compile")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.adapter is not None:
            if self.trainable is not None:
                yield "trainable", ("with train.adapter, what trains besides the adapter is "
                                    "train.adapter.fully_trained: drop train.trainable")
            yield from self.adapter.train_problems(self)
        if self.stop_when:
            from prism_core.train.validation import condition_problem  # torch-free

            if self.validate_every is None:
                yield "stop_when", "is checked at each validation: set validate_every too"
            for i, text in enumerate(self.stop_when):
                problem = condition_problem(text)
                if problem:
                    yield f"stop_when[{i}]", problem
        if self.per_device_batch_size >= 1 and self.global_batch_size % self.per_device_batch_size:
            yield "global_batch_size", (
                f"must be a multiple of per_device_batch_size ({self.per_device_batch_size}), "
                f"got {self.global_batch_size}"
            )
        if math.isfinite(self.warmup_ratio) and self.warmup_ratio >= 1:
            yield "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}"


@attrs.frozen(kw_only=True)
class EvalSpec:
    """Two evaluations: the held-out split of a conversation data set after training (``data``, ``split``,
    ``max_examples``, ``max_new_tokens``: exact match with the blind control, ``eval.json``), and benchmark
    ``tasks``, during training (every ``every`` steps, and at the end) and by ``prism eval RUN_DIR``."""

    data: DatasetSpec | None = spec_field(None, help="held-out data; defaults to the train data's test split")
    split: str = spec_field("test", help="split of the data to evaluate")
    max_examples: int | None = spec_field(None, at_least=1, help="evaluate at most this many examples")
    batch_size: int = spec_field(64, at_least=1, help="examples per generation batch")
    max_new_tokens: int = spec_field(8, at_least=1, help="tokens generated per answer")
    tasks: tuple[EvalTaskSpec, ...] = spec_field((), help="benchmarks to evaluate on, e.g. [{kind = 'pope'}]")
    root: str | None = spec_field(None, help="data root the tasks find their files under (prism data prepare)")
    every: int | None = spec_field(None, at_least=1, help="evaluate the tasks every N optimizer steps during training")
    at_end: bool = spec_field(True, help="evaluate the tasks once training ends")
    limit: int | None = spec_field(None, at_least=1, help="evaluate each task on a fixed subset of this many examples")
    distribute: Literal["shard", "rank0"] = spec_field(
        "shard", help="shard: each rank answers a share of the examples; rank0: rank 0 alone, the others wait")

    @property
    def held_out(self) -> bool:
        """Whether the held-out split is evaluated after training: when ``data`` is set, or when there are no
        ``tasks`` (the default evaluation)."""
        return self.data is not None or not self.tasks

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.every is not None and not self.tasks:
            yield "every", "evaluates eval.tasks during training, but eval.tasks is empty"
        kinds = [task.kind for task in self.tasks]
        for kind in sorted({k for k in kinds if kinds.count(k) > 1}):
            yield "tasks", f"kind {kind!r} is listed more than once (its results would overwrite each other)"


@attrs.frozen(kw_only=True)
class RunSpec:
    schema: int = spec_field(SCHEMA_VERSION, help="spec format version")
    model: ModelSpec
    data: DatasetSpec | None = None
    train: TrainSpec = spec_field(factory=TrainSpec)
    eval: EvalSpec | None = None

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.data is not None:
            for name, message in self.data.stage_problems(self.train.stage):
                yield f"data.{name}", message
        if self.train.packing and not self.model.llm.supports_packing:
            yield "train.packing", (f"the LLM backbone kind {self.model.llm.kind!r} cannot keep packed examples "
                                    "apart (its spec does not declare supports_packing): set packing = false")


# -- errors -------------------------------------------------------------------------------------------------------
class SpecError(Exception):
    """Every problem of a spec, each ``(dotted.path, message)``; ``str()`` lists them (the first
    ``MAX_LISTED``, each line cut at ``MAX_LINE`` characters, so a pathological spec cannot flood a terminal)."""

    MAX_LISTED = 50
    MAX_LINE = 2000

    def __init__(self, problems: Sequence[tuple[str, str]], source: str = "spec") -> None:
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        lines = [f"{source}: {n} problem{'s' if n != 1 else ''}"]
        for path, message in self.problems[: self.MAX_LISTED]:
            lines.append(_clip(f"  {path}: {message}" if path else f"  {message}", self.MAX_LINE))
        if n > self.MAX_LISTED:
            lines.append(f"  ... and {n - self.MAX_LISTED} more")
        super().__init__("\n".join(lines))


class _Problem(ValueError):
    """A structuring problem whose message is already user-facing."""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {_clip(repr(value), 60)}"


def _suggest(key: str, known: Sequence[str]) -> list[str]:
    """Fields the user may have meant: a close spelling, the initials (``lr`` → ``learning_rate``), or the only
    fields that contain the key."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return close
    initials = [name for name in known if "".join(part[0] for part in name.split("_") if part) == key.lower()]
    if initials:
        return initials[:2]
    containing = [name for name in known if len(key) >= 3 and key.lower() in name]
    return containing[:2] if len(containing) <= 2 else []


# -- the converter ------------------------------------------------------------------------------------------------
def _strict(expected: type, accept: tuple[type, ...]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if type(value) not in accept:
            raise _Problem(f"expected {expected.__name__}, got {_describe(value)}")
        if expected is float and math.isnan(value):
            raise _Problem("expected a number, got nan")
        return expected(value)

    return hook


def _table_hook_factory(conv: cattrs.Converter) -> Callable[[type], Callable[[Any, Any], Any]]:
    """attrs classes come from TOML tables: anything else is said as such (not cattrs' internal TypeError)."""

    def factory(cls: type) -> Callable[[Any, Any], Any]:
        base = cattrs.gen.make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)

        def hook(value: Any, t: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _Problem(f"expected a table, got {_describe(value)}")
            return base(value, t)

        return hook

    return factory


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
        if not isinstance(value, Mapping):
            raise _Problem(f"expected a table, got {_describe(value)}")
        stage = value.get("stage", "finetune")  # fields the table leaves out come from its stage's recipe
        defaults = STAGE_DEFAULTS.get(stage, {}) if isinstance(stage, str) else {}
        return base({**defaults, "strategy": {"kind": "single"}, **value}, TrainSpec)

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
    conv.register_structure_hook_factory(attrs.has, _table_hook_factory(conv))
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
        moved = getattr(exc.cl, "moved_fields", {})
        for key in sorted(exc.extra_fields):
            where = f"{path}.{key}" if path else key
            if key in moved:
                yield where, f"no longer a field here: {moved[key]}"
                continue
            close = _suggest(key, known)
            hint = (f"; did you mean {' or '.join(map(repr, close))}?" if close
                    else f" (fields: {', '.join(known)})")
            yield where, f"unknown field{hint}"
    elif isinstance(exc, KeyError):
        yield path, "required field missing"
    else:
        yield path, str(exc)


def _semantic_problems(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    """``problems()`` of every spec in the tree, prefixed with its path."""
    if not attrs.has(type(obj)):
        return
    for field_name, message in range_problems(obj):
        yield (f"{path}.{field_name}" if path else field_name), message
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
        return _read_utf8(path), str(path)
    text = get_registry().spec_text(str(name_or_path))
    if text is not None:
        return text, f"<spec {name_or_path}>"
    names = get_registry().spec_names()
    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SpecError([("", f"no such file, and no named spec {str(name_or_path)!r}{hint} "
                          f"(named specs: {', '.join(names) or 'none'})")], str(name_or_path))


def _read_utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError([("", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column} "
                              "(TOML files are UTF-8)")], str(path)) from None


#: Deepest nesting of tables and arrays a spec may have (real specs nest 4 or 5 levels).
MAX_NESTING = 32


def _nesting_problem(data: Any) -> str | None:
    """Where ``data`` nests deeper than ``MAX_NESTING`` (walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_NESTING:
            return _clip(path, 120)
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(item, (dict, list)):
                child = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
                stack.append((item, child, depth + 1))
    return None


def load_spec(name_or_path: str | Path, overrides: Iterable[str] = (), cls: type = RunSpec) -> Any:
    """Read, migrate, override and structure a spec file or named spec."""
    text, source = read_spec_text(name_or_path)
    return loads_spec(text, overrides, cls, source)


def loads_spec(text: str, overrides: Iterable[str] = (), cls: type = RunSpec, source: str = "spec") -> Any:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([("", f"invalid TOML: {exc}")], source) from None
    except RecursionError:  # the parser recurses per nested array / inline table
        raise SpecError([("", f"arrays or inline tables nested too deeply (a spec nests at most {MAX_NESTING} "
                              "levels)")], source) from None
    data = apply_overrides(data, overrides)
    deep = _nesting_problem(data)
    if deep is not None:
        raise SpecError([(deep, f"nested more than {MAX_NESTING} levels deep (a spec nests at most "
                                f"{MAX_NESTING} levels)")], source)
    if cls is RunSpec:
        data = migrate(data, source)
    return structure(data, cls, source)


def to_dict(spec: Any) -> dict[str, Any]:
    return converter.unstructure(spec)


def dumps_spec(spec: Any) -> str:
    """The spec as TOML with every default filled in; ``loads_spec(dumps_spec(s)) == s``."""
    import tomli_w

    return tomli_w.dumps(to_dict(spec))
