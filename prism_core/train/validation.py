"""Validation during training, and stopping on its evidence.

``[train] validate_every = N`` evaluates the run's own data set on its ``validation_split`` (examples held out from
training and from the test split alike) every N optimizer steps, with the exact-match evaluation of
``prism_core.evaluation.conversations`` (no blind control), each rank answering its share. Rank 0 logs
``validation/accuracy`` and ``validation/by_type/TYPE/accuracy`` to the run's trackers (``metrics.jsonl``) at that
step, next to the loss. ``[train] stop_when`` ends training at the first validation where every condition holds
(``"validation/by_type/*/accuracy >= 0.97"``: every metric the pattern matches); the run then saves, exports and is
evaluated as at its planned end, and ``max_steps`` / ``epochs`` remain the budget.

The split comes from the run's ``[data]`` table, so a changed data seed or image size changes it too. Unlike
``[eval] tasks`` (benchmarks, each with its own data), it needs no second data table. Importing this module does not
import torch.
"""

from __future__ import annotations

import contextlib
import fnmatch
import operator
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "validation"
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_CONDITION = re.compile(r"^\s*(\S+)\s*(>=|<=|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Condition:
    """``PATTERN OP NUMBER``: every logged metric whose name matches the glob ``PATTERN`` compares true."""

    text: str
    pattern: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _CONDITION.match(text)
        value = None
        if match:
            with contextlib.suppress(ValueError):
                value = float(match.group(3))
        if not match or value is None or value != value:
            raise ValueError(f"expected 'METRIC OP NUMBER' with OP one of >=, >, <=, <, e.g. "
                             f"'{PREFIX}/by_type/*/accuracy >= 0.97'; got {text!r}")
        if not match.group(1).startswith(f"{PREFIX}/"):
            raise ValueError(f"{text!r}: conditions are checked on the validation metrics, whose names start with "
                             f"'{PREFIX}/' (e.g. {PREFIX}/accuracy, {PREFIX}/by_type/*/accuracy)")
        return cls(text, match.group(1), match.group(2), value)

    def holds(self, metrics: Mapping[str, float]) -> bool:
        names = [name for name in metrics if fnmatch.fnmatchcase(name, self.pattern)]
        if not names:
            raise ValueError(f"{self.text!r} matches none of the validation metrics: "
                             f"{', '.join(sorted(metrics))}")
        return all(_OPERATORS[self.op](metrics[name], self.value) for name in names)


def condition_problem(text: str) -> str | None:
    """Why ``text`` is not a ``stop_when`` condition (None when it is): for spec validation."""
    try:
        Condition.parse(text)
    except ValueError as exc:
        return str(exc)
    return None


def validation_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """``{"validation/accuracy": ..., "validation/by_type/colour/accuracy": ...}`` from an exact-match report."""
    with_image = report["with_image"]
    metrics = {f"{PREFIX}/accuracy": float(with_image["accuracy"])}
    for question_type, figures in with_image["by_type"].items():
        metrics[f"{PREFIX}/by_type/{question_type}/accuracy"] = float(figures["accuracy"])
    return metrics


class Validation:
    """Built once per run on every rank; the loop calls ``after_step`` after each optimizer step."""

    def __init__(self, spec: Any, *, model: Any, strategy: Any, trackers: list[Any], source: str = "spec") -> None:
        from prism_core.spec import EvalSpec

        cfg = spec.train
        self.every: int | None = cfg.validate_every
        self.conditions = [Condition.parse(text) for text in cfg.stop_when]
        self.strategy, self.trackers, self.source = strategy, trackers, source
        self.precision = cfg.precision
        settings = spec.eval or EvalSpec()  # generation settings of the held-out evaluation
        self.batch_size, self.num_workers = settings.batch_size, cfg.num_workers
        self.task: Any = None
        if self.every is None:
            return
        from prism_core.data import DataError
        from prism_core.evaluation.conversations import ConversationTask
        from prism_core.spec import SpecError

        if getattr(strategy, "sharded", False):
            kind = cfg.strategy.kind if cfg.strategy is not None else "?"
            raise SpecError([("train.validate_every", f"needs every rank to hold the whole model (strategies single, "
                                                      f"ddp); under {kind!r} leave it unset")], source)
        try:
            dataset = spec.data.build(tokenizer=model.tokenizer, prompt_format=model.prompt_format,
                                      image_transform=model.image_transform, split=cfg.validation_split,
                                      stage=cfg.stage)
        except DataError:
            raise  # bad data in the split: reported as such (file, entry), not as a spec mistake
        except ValueError as exc:  # e.g. the data set has no such split
            raise SpecError([("train.validation_split", str(exc))], source) from None
        try:
            self.task = ConversationTask.from_dataset(dataset, name=PREFIX, max_new_tokens=settings.max_new_tokens,
                                                      blind_control=False)
        except TypeError as exc:  # not a conversation data set
            raise SpecError([("train.validate_every", str(exc))], source) from None

    def after_step(self, model: Any, step: int) -> bool:
        """Validate when ``step`` is due; True when every ``stop_when`` condition holds (the same on every rank)."""
        if self.task is None or step % self.every:
            return False
        metrics = self.run(model, step)
        if not self.conditions:
            return False
        from prism_core.spec import SpecError
        from prism_core.train.agree import agree, any_rank

        met, problems = False, []
        if metrics is not None:  # rank 0 decides; a pattern that matches nothing stops every rank with its message
            results = []
            for i, condition in enumerate(self.conditions):
                try:
                    results.append(condition.holds(metrics))
                except ValueError as exc:
                    problems.append((f"train.stop_when[{i}]", str(exc)))
            met = all(results) and not problems
        agree(self.strategy, SpecError(problems, self.source) if problems else None)
        stop = any_rank(self.strategy, met)
        if stop and self.strategy.rank == 0:
            _say(f"step {step}: validation meets train.stop_when ({'; '.join(c.text for c in self.conditions)}); "
                 "training stops here")
        return stop

    def run(self, model: Any, step: int) -> dict[str, float] | None:
        """Evaluate the validation split (collective); the metrics on rank 0, None elsewhere."""
        import torch

        from prism_core.evaluation import run_task
        from prism_core.train.distributed import unwrap

        strategy = self.strategy
        device_type = strategy.device.type

        def autocast() -> Any:
            return torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

        result = run_task(unwrap(model), self.task, batch_size=self.batch_size, num_workers=self.num_workers,
                          progress=False, rank=strategy.rank, world_size=strategy.world_size, autocast=autocast)
        if result is None:
            return None
        metrics = validation_metrics(result.metrics)
        for tracker in self.trackers:
            tracker.log(metrics, step)
        by_type = ", ".join(f"{name.split('/')[-2]} {value:.1%}" for name, value in metrics.items()
                            if "/by_type/" in name)
        _say(f"step {step}: validation {metrics[f'{PREFIX}/accuracy']:.1%} ({by_type})")
        return metrics


def _say(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"prism-run: {text}", file=sys.stderr)
