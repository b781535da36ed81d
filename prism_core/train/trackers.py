"""Metric trackers: JSON lines (always available), Weights & Biases and TensorBoard (when installed).

A tracker is any object with ``log(metrics, step)`` and ``close()``. Trackers run on rank 0 only. Third-party
trackers register a factory ``(run_dir, run_name, config) -> tracker`` under the entry-point group
``prism.trackers``.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from prism_core.registry import _installed_entry_points

TRACKERS_GROUP = "prism.trackers"
METRICS_FILE = "metrics.jsonl"


class Tracker(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TrackerUnavailableError(RuntimeError):
    """A tracker was asked for but its package is not installed (or it is unknown)."""


def _json_number(value: float) -> float | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class JsonLinesTracker:
    """Appends one ``{"step": ..., **metrics}`` object per line to ``RUN_DIR/metrics.jsonl``.

    On resume from step k, lines for steps after k (written before the interruption, after the checkpoint) are
    dropped first, so the file always reads as one uninterrupted curve.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        if resume_step is not None and self.path.is_file():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        record = {"step": step, **{k: _json_number(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/metrics.jsonl``, in order."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class WandbTracker:
    def __init__(self, run_dir: Path, run_name: str, config: Mapping[str, Any], resume: bool) -> None:
        import wandb

        self._wandb = wandb
        self._run = wandb.init(name=run_name, id=run_name, dir=str(run_dir), config=dict(config),
                               resume="allow" if resume else None)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._run.log(dict(metrics), step=step)

    def close(self) -> None:
        self._run.finish()


class TensorBoardTracker:
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


#: tracker name → the module it needs (checked before training starts, so a missing one fails fast).
REQUIRED_MODULES = {"jsonl": None, "wandb": "wandb", "tensorboard": "tensorboard"}
BUILTIN = tuple(REQUIRED_MODULES)


def _plugin_factories() -> dict[str, Callable[..., Tracker]]:
    return {ep.name: ep for ep, _dist, _version in _installed_entry_points({TRACKERS_GROUP})}  # type: ignore[misc]


def check_trackers(names: Sequence[str]) -> None:
    """Raise :class:`TrackerUnavailableError` for an unknown tracker or one whose package is missing."""
    plugins = _plugin_factories()
    for name in names:
        if name in plugins:
            continue
        if name not in REQUIRED_MODULES:
            known = ", ".join([*BUILTIN, *sorted(plugins)])
            raise TrackerUnavailableError(f"train.trackers: unknown tracker {name!r} (available: {known})")
        module = REQUIRED_MODULES[name]
        if module is not None and importlib.util.find_spec(module) is None:
            raise TrackerUnavailableError(
                f"train.trackers: tracker {name!r} needs the {module!r} package, which is not installed: "
                f"pip install {module} (or remove {name!r} from train.trackers)"
            )


def make_trackers(
    names: Sequence[str], run_dir: Path, *, run_name: str, config: Mapping[str, Any], resume_step: int | None
) -> list[Tracker]:
    check_trackers(names)
    plugins = _plugin_factories()
    trackers: list[Tracker] = []
    for name in names:
        if name == "jsonl":
            trackers.append(JsonLinesTracker(run_dir, resume_step))
        elif name == "wandb":
            trackers.append(WandbTracker(run_dir, run_name, config, resume_step is not None))
        elif name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir))
        else:
            trackers.append(plugins[name].load()(run_dir, run_name, config))  # type: ignore[attr-defined]
    return trackers
