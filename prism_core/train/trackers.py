"""Metric trackers: JSON lines (always available), Weights & Biases and TensorBoard (the extras
``prism-core[wandb]`` and ``prism-core[tensorboard]``).

A tracker is any object with ``log(metrics, step)`` and ``close()``. Trackers run on rank 0 only. Every tracker logs
the same scalars at the same steps; W&B and TensorBoard also record the run's configuration: the resolved spec
(``spec.toml``) and ``plugins.json``. Resuming a run continues the same tracker run with no step twice (each tracker's
class says how). Third-party trackers register a factory ``(run_dir, run_name, config) -> tracker`` under the
entry-point group ``prism.trackers``; ``config`` is the resolved spec as a dict.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import secrets
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


def _complete_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` for each line of ``metrics.jsonl``. A line that does not parse (what a kill mid-write leaves
    as the last line) is dropped with a warning naming it, rather than failing every later reader."""
    import logging

    kept = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            logging.getLogger(__name__).warning("%s line %d: not a complete record (%d characters, cut short by an "
                                                "interruption?): dropped", path, number, len(line))
            continue
        kept.append((line, record))
    return kept


def _records_up_to(path: Path, step: int) -> list[str]:
    """The lines of ``metrics.jsonl`` up to ``step`` (see ``_complete_records``)."""
    return [line for line, record in _complete_records(path) if record.get("step", 0) <= step]


class JsonLinesTracker:
    """Appends one ``{"step": ..., **metrics}`` object per line to ``RUN_DIR/metrics.jsonl``.

    On resume from step k, lines for steps after k (written before the interruption, after the checkpoint) are
    dropped first, so the file always reads as one uninterrupted curve.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        if resume_step is not None and self.path.is_file():
            kept = _records_up_to(self.path, resume_step)
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
    return [record for _, record in _complete_records(Path(run_dir) / METRICS_FILE)]


def run_config(run_dir: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    """What W&B and TensorBoard record as the run's configuration: the resolved spec and ``plugins.json``."""
    plugins_file = Path(run_dir) / "plugins.json"
    plugins = json.loads(plugins_file.read_text(encoding="utf-8")) if plugins_file.is_file() else {}
    return {"spec": dict(spec), "plugins": plugins}


class WandbTracker:
    """One W&B run per prism run, in ``RUN_DIR/wandb/`` (``WANDB_MODE=offline`` keeps it there for ``wandb sync``;
    ``WANDB_PROJECT`` / ``WANDB_ENTITY`` choose where it goes online).

    ``RUN_DIR/wandb/prism-run.json`` ties the two together: the W&B run id and the last step sent to it. A resumed
    prism run resumes that W&B run and leaves out the steps it already holds (the interrupted process logged them
    after its last checkpoint; the resumed one computes them again, bitwise the same but for timings), because W&B
    keeps one value per step and only accepts increasing steps.
    """

    STATE_FILE = "prism-run.json"

    def __init__(self, run_dir: Path, run_name: str, config: Mapping[str, Any], resume_step: int | None) -> None:
        import wandb

        self._state_path = Path(run_dir) / "wandb" / self.STATE_FILE
        state = json.loads(self._state_path.read_text(encoding="utf-8")) if self._state_path.is_file() else None
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        if state is None or resume_step is None:  # a new run: a new W&B run, never one that happens to share a name
            state = {"id": f"{re.sub(r'[^A-Za-z0-9._-]+', '-', run_name)[:100]}-{secrets.token_hex(4)}",
                     "last_step": 0}
            self._run = wandb.init(name=run_name, id=state["id"], dir=str(run_dir), config=dict(config))
        else:
            self._run = wandb.init(name=run_name, id=state["id"], dir=str(run_dir), config=dict(config),
                                   resume="allow")
            # Online, the server knows the run's last step too (more than the file if a crash lost its last write).
            state["last_step"] = max(state["last_step"], getattr(self._run, "starting_step", 0) - 1)
        self._state = state
        self._held_through = state["last_step"]  # what the W&B run held when this process took over
        self._save_state()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if step <= self._held_through:
            return
        self._run.log(dict(metrics), step=step)  # a second call for the same step (evaluation) joins its row
        if step > self._state["last_step"]:
            self._state["last_step"] = step
            self._save_state()

    def _save_state(self) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state) + "\n", encoding="utf-8")
        os.replace(tmp, self._state_path)

    def close(self) -> None:
        self._run.finish()


class TensorBoardTracker:
    """Event files in ``RUN_DIR/tensorboard/`` (``tensorboard --logdir RUN_DIR/tensorboard``), a scalar per metric
    and step; the spec and ``plugins.json`` as text at step 0.

    Resuming at step k starts a new event file that purges steps after k (TensorBoard's ``purge_step``): the events
    the interrupted process wrote after its last checkpoint are hidden, and the resumed ones take their place.
    """

    def __init__(self, run_dir: Path, config: Mapping[str, Any], resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = Path(run_dir) / "tensorboard"
        resumed = resume_step is not None and any(log_dir.glob("events.out.tfevents.*"))
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step + 1 if resumed else None)
        if not resumed:
            spec_file = Path(run_dir) / "spec.toml"
            spec_text = spec_file.read_text(encoding="utf-8") if spec_file.is_file() else json.dumps(config["spec"])
            self._writer.add_text("spec", _markdown_code(spec_text), 0)
            self._writer.add_text("plugins", _markdown_code(json.dumps(config["plugins"], indent=1)), 0)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _markdown_code(text: str) -> str:
    """TensorBoard renders text summaries as Markdown: indent by four spaces to keep a file's layout."""
    return "\n".join(f"    {line}" for line in text.splitlines())


#: tracker name → the module it needs (checked before training starts, so a missing one fails fast); the extra of
#: prism-core that installs it has the tracker's name.
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
                f"pip install 'prism-core[{name}]' (or remove {name!r} from train.trackers)"
            )


def make_trackers(
    names: Sequence[str], run_dir: Path, *, run_name: str, config: Mapping[str, Any], resume_step: int | None
) -> list[Tracker]:
    """The trackers ``names`` asks for. ``config`` is the resolved spec as a dict; ``resume_step`` the step training
    continues from (0 or None for a new run): trackers find their earlier data in ``run_dir`` and continue it."""
    check_trackers(names)
    plugins = _plugin_factories()
    trackers: list[Tracker] = []
    for name in names:
        if name == "jsonl":
            trackers.append(JsonLinesTracker(run_dir, resume_step))
        elif name == "wandb":
            trackers.append(WandbTracker(run_dir, run_name, run_config(run_dir, config), resume_step))
        elif name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir, run_config(run_dir, config), resume_step))
        else:
            trackers.append(plugins[name].load()(run_dir, run_name, config))  # type: ignore[attr-defined]
    return trackers
