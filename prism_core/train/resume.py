"""``prism-run --resume RUN_DIR [--step N]``: which checkpoint, and what the run's (edited) spec may change.

Which checkpoint: the newest one whose manifest verifies (``checkpoint.verify``, the hashing shared by the ranks),
or step N. A damaged checkpoint is named with its file in a one-line warning, moved aside as
``checkpoints/damaged-step-*`` (kept, never read again) and the run resumes from the newest intact one; with
``--step N``, newer checkpoints are moved aside as ``superseded-step-*`` (the run continues from N on a new
trajectory). No intact checkpoint, or a damaged step N, is an error that lists what was found: a resume never
restarts from step 0 without saying so (only a run that has no checkpoint directory at all starts over, and says so).

What may change: each checkpoint keeps the resolved spec it was trained with (``spec.toml``), and the run's
``spec.toml`` is compared with it field by field. ``RESUMABLE`` lists what a resume may change (each change is
said when the run continues; the optimizer's learning rate and weight decay are applied from the resumed step);
anything else (the model, the data, the seed, batch sizes, the stage, ``max_length``, the strategy kind) is refused
with every changed dotted path listed, before the model is built.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism_core.train import checkpoint as ckpt
from prism_core.train.agree import gather_json


class ResumeError(RuntimeError):
    """The run cannot continue as asked; the message says what was found. Every rank raises it alike."""

    same_on_every_rank = True


#: Fields a resume may change, and what the change does.
RESUMABLE: dict[str, str] = {
    "train.max_steps": "the run continues to the new end; the learning-rate schedule is recomputed for it",
    "train.epochs": "the run continues to the new end; the learning-rate schedule is recomputed for it",
    "train.learning_rate": "applied from the resumed step",
    "train.weight_decay": "applied from the resumed step",
    "train.lr_schedule": "applied from the resumed step",
    "train.warmup_ratio": "applied from the resumed step",
    "train.max_grad_norm": "applied from the resumed step",
    "train.precision": "applied from the resumed step",
    "train.activation_checkpointing": "applied (the results do not change)",
    "train.compile": "applied (the same computation, up to the last bits of fused kernels)",
    "train.save_every": "applied",
    "train.keep_last": "applied",
    "train.log_every": "applied",
    "train.trackers": "applied",
    "train.num_workers": "applied (the data order does not change)",
    "train.peak_tflops": "applied",
    "train.validate_every": "applied from the resumed step",
    "train.validation_split": "applied from the resumed step",
    "train.stop_when": "applied from the resumed step",
    "train.output_dir": "ignored: the run stays in its directory",
    "train.run_name": "ignored: the run stays in its directory",
    "train.adapter.dropout": "applied from the resumed step",
    "train.adapter.fully_trained_learning_rate": "applied from the resumed step",
}
RESUMABLE_PREFIXES = {"eval": "applied to the evaluation after training",
                      "train.strategy": "applied (a checkpoint of the same strategy kind is reshardable)"}
#: Why a change is refused, by dotted prefix (longest match wins).
REFUSED_BECAUSE = {
    "model": "the parameters' shapes and initial weights",
    "data": "what each step trains on",
    "train.seed": "the data order and initialisation",
    "train.global_batch_size": "what each step trains on",
    "train.per_device_batch_size": "the data order on each rank",
    "train.stage": "which parameters train",
    "train.trainable": "which parameters train",
    "train.adapter": "the adapter's layers and parameters, and what trains",
    "train.max_length": "what each row keeps",
    "train.packing": "which examples each rank's micro-batches hold",
    "train.strategy.kind": "the checkpoint layout",
}


@dataclass
class Choice:
    """The checkpoint to resume from (``None``: the run has none yet) and what was found on the way."""

    path: Path | None = None
    step: int = 0
    damaged: list[tuple[int, Path, list[str]]] = field(default_factory=list)
    superseded: list[tuple[int, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def choose(run_dir: Path, strategy: Any, step: int | None = None) -> Choice:
    """Verify checkpoints newest first (collective) and pick the first intact one, or ``step``."""
    run_dir = Path(run_dir)
    found = ckpt.step_dirs(run_dir)
    if not found:
        if step is not None:
            raise ResumeError(f"{run_dir}: no checkpoint to resume from (asked for step {step})")
        return Choice(notes=[f"{run_dir} has no checkpoint yet: starting from step 0"])
    by_step = dict(found)
    if step is not None and step not in by_step:
        raise ResumeError(f"{run_dir}: no checkpoint for step {step} (checkpoints: {', '.join(map(str, by_step))})")
    choice = Choice()
    for s, path in [(step, by_step[step])] if step is not None else reversed(found):
        local = ckpt.verify(path, strategy.rank, strategy.world_size)
        problems = list(dict.fromkeys(p for part in gather_json(strategy, local) for p in part))
        if not problems:
            choice.path, choice.step = path, s
            break
        choice.damaged.append((s, path, problems))
    if choice.path is None:
        if step is not None:
            raise ResumeError(f"checkpoint step {step} of {run_dir} is damaged: {'; '.join(problems)}. Choose "
                              f"another with --step (checkpoints: {', '.join(map(str, by_step))})")
        listed = "\n".join(f"  step {s}: {'; '.join(p)}" for s, _, p in choice.damaged)
        raise ResumeError(f"{run_dir}: no intact checkpoint to resume from:\n{listed}\nRestore them, or delete "
                          f"{run_dir / ckpt.CHECKPOINTS} to start again from step 0")
    if step is not None:
        choice.superseded = [(s, p) for s, p in found if s > step]
    if ckpt.read_meta(choice.path)["format"] == 1:
        choice.notes.append(f"checkpoint step {choice.step} has no manifest (an older prism-core wrote it): "
                            "its files are not verified")
    return choice


def set_aside(choice: Choice, strategy: Any) -> list[str]:
    """Rank 0 moves damaged and superseded checkpoints aside; returns the lines to say (every rank calls)."""
    lines = []
    for s, path, problems in choice.damaged:
        target = ckpt.move_aside(path, "damaged") if strategy.rank == 0 else path.with_name(f"damaged-{path.name}")
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        lines.append(f"warning: checkpoint step {s} is damaged ({problems[0]}{more}); resuming from step "
                     f"{choice.step}, the newest intact checkpoint (the damaged one is kept as {target.name})")
    for s, path in choice.superseded:
        target = ckpt.move_aside(path, "superseded") if strategy.rank == 0 else path
        lines.append(f"checkpoint step {s} is newer than step {choice.step}: moved aside as {target.name}")
    strategy.barrier()
    return lines


# -- what the spec may change ----------------------------------------------------------------------------------------
_MISSING = object()


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
        yield f"{path}.__len__", len(value)
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    else:
        yield path, value


def _show(value: Any) -> str:
    return "(unset)" if value is _MISSING else repr(value)


def _rule(path: str) -> tuple[bool, str]:
    """(allowed, what it does / why not) for a changed dotted path."""
    if path in RESUMABLE:
        return True, RESUMABLE[path]
    refused = [p for p in REFUSED_BECAUSE if path == p or path.startswith((p + ".", p + "["))]
    if refused:
        return False, REFUSED_BECAUSE[max(refused, key=len)]
    for prefix, effect in RESUMABLE_PREFIXES.items():
        if path == prefix or path.startswith(prefix + "."):
            return True, effect
    return False, "not a field a resume may change"


@dataclass(frozen=True)
class Change:
    path: str
    old: Any
    new: Any
    allowed: bool
    effect: str

    def __str__(self) -> str:
        path = self.path.removesuffix(".__len__")
        what = "entries" if self.path.endswith(".__len__") else ""
        return f"{path}: {_show(self.old)} → {_show(self.new)}{f' {what}' if what else ''} ({self.effect})"


def _saved_spec(text: str) -> dict[str, Any]:
    """The checkpoint's spec as the current plugins fill it in (a field added since has its default, so it is no
    change); as written, if it no longer reads (a field since removed then shows as a change)."""
    from prism_core.spec import SpecError, loads_spec, to_dict, tomllib

    try:
        return to_dict(loads_spec(text))
    except SpecError:
        return tomllib.loads(text)


def spec_changes(checkpoint: Path, spec: Any) -> list[Change]:
    """Every difference between the spec ``checkpoint`` was trained with and ``spec``."""
    from prism_core.spec import to_dict

    saved_file = Path(checkpoint) / ckpt.SPEC
    if not saved_file.is_file():
        return []
    saved = dict(_flatten(_saved_spec(saved_file.read_text(encoding="utf-8"))))
    current = dict(_flatten(to_dict(spec)))
    changes = []
    for path in sorted(set(saved) | set(current)):
        old, new = saved.get(path, _MISSING), current.get(path, _MISSING)
        if old != new:
            changes.append(Change(path, old, new, *_rule(path)))
    return changes


def check_spec(choice: Choice, spec: Any, spec_file: Path) -> list[Change]:
    """The allowed changes; ``ResumeError`` listing every refused one (with dotted paths)."""
    if choice.path is None:
        return []
    if not (choice.path / ckpt.SPEC).is_file():
        choice.notes.append(f"checkpoint step {choice.step} keeps no spec.toml (an older prism-core wrote it): "
                            f"{spec_file} is used as it is, unchecked")
        return []
    changes = spec_changes(choice.path, spec)
    refused = [c for c in changes if not c.allowed]
    trainer = ckpt.read_json(choice.path / "trainer.json")
    done, cfg = int(trainer["step"]), spec.train
    if cfg.max_steps is not None and cfg.max_steps < done:
        refused.append(Change("train.max_steps", trainer.get("total_steps"), cfg.max_steps, False,
                              f"the run is already at step {done}"))
    saved_epochs = {c.path: c.old for c in changes}.get("train.epochs", cfg.epochs)
    if cfg.max_steps is None and "train.max_steps" not in {c.path for c in changes} and cfg.epochs < saved_epochs:
        per_epoch = int(trainer["total_steps"]) // int(saved_epochs)
        if cfg.epochs * per_epoch < done:
            refused.append(Change("train.epochs", saved_epochs, cfg.epochs, False,
                                  f"the run is already at step {done}, in epoch {done // per_epoch + 1}"))
    if refused:
        listed = "\n".join(f"  {c}" for c in refused)
        raise ResumeError(f"{spec_file} differs from the spec checkpoint step {choice.step} was trained with, in "
                          f"what a resume cannot change:\n{listed}\nRestore these values (the checkpoint's own "
                          f"copy: {choice.path / ckpt.SPEC}), or start a new run with the new spec")
    return changes


def apply_hyperparameters(optimizer: Any, scheduler: Any, fresh: list[dict[str, Any]], learning_rate: float) -> None:
    """After loading a checkpoint: the spec's learning rates and per-group weight decay (``fresh``: the groups'
    values before the load, ``initial_lr`` their peak, default ``learning_rate``) replace the saved ones, and the
    current learning rate follows the schedule."""
    peaks = [values.get("initial_lr", learning_rate) for values in fresh]
    scheduler.base_lrs = list(peaks)
    for group, values, peak in zip(optimizer.param_groups, fresh, peaks, strict=True):
        group["weight_decay"] = values["weight_decay"]
        group["initial_lr"] = peak
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


def say(lines: list[str], strategy: Any) -> None:
    if strategy.rank == 0:
        for line in lines:
            print(f"prism-run: {line}", file=sys.stderr, flush=True)


#: Changed fields after which the loaded optimizer's learning rate / weight decay are recomputed from the spec.
SCHEDULE_FIELDS = {"train.max_steps", "train.epochs", "train.learning_rate", "train.weight_decay",
                   "train.lr_schedule", "train.warmup_ratio", "train.adapter.fully_trained_learning_rate"}
