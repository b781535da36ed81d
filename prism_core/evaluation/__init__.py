"""Evaluation: benchmark tasks (``EvalTask`` plugins) run on a model, batched, optionally split across ranks.

    import prism_core
    results = prism_core.evaluate("runs/my-run", "pope,gqa", root="/data/vlm-eval", limit=500)

A task reads its examples from the benchmark's official files, answers a batch with one batched model call and
scores every answer with the benchmark's metric. This module does everything around that: the fixed subset a
``limit`` picks, images loaded and transformed (in worker processes when asked), batches, each rank's share of the
examples and gathering the answers on rank 0, the progress bar, ``results.json``, one ``predictions-TASK.jsonl``
per task and the summary table. The same code runs ``prism eval`` and ``[eval]`` during training.

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism_core.data import DataError

RESULTS_FILE = "results.json"
#: ``limit`` picks the same examples every run: a random subset drawn with the seed the original harness used for
#: its "slim" sets (then put back in file order).
LIMIT_SEED = 21

Gather = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass
class TaskResult:
    """One task's outcome on rank 0: its metrics and every example's record, in example order."""

    name: str
    headline: str
    metrics: dict[str, Any]
    records: list[dict[str, Any]]
    seconds: float

    @property
    def num_examples(self) -> int:
        return len(self.records)

    def summary(self) -> dict[str, Any]:
        return {"headline": self.headline, "metrics": self.metrics, "num_examples": self.num_examples,
                "seconds": round(self.seconds, 3),
                "examples_per_s": round(self.num_examples / self.seconds, 3) if self.seconds > 0 else None}


# -- tasks ----------------------------------------------------------------------------------------------------------
def build_tasks(tasks: Any, *, root: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                source: str = "tasks") -> list[Any]:
    """Built ``EvalTask`` objects from ``"pope,gqa"``, or a sequence of kind names, spec tables (``{"kind": "pope",
    "split": "adversarial"}``), ``EvalTaskSpec`` objects or already built tasks. ``overrides`` are
    ``KIND.FIELD=VALUE`` (``pope.splits=["random"]``). Every problem is reported at once as a ``SpecError``."""
    from prism_core.spec import EvalSpec, EvalTaskSpec, SpecError, parse_override, structure

    if isinstance(tasks, str):
        tasks = [name.strip() for name in tasks.split(",") if name.strip()]
    built: list[Any] = []
    tables: list[Any] = []
    for item in tasks:
        if hasattr(item, "predict") and hasattr(item, "score"):
            built.append(item)
        elif isinstance(item, EvalTaskSpec):
            tables.append(item)
        elif isinstance(item, str):
            tables.append({"kind": item})
        elif isinstance(item, Mapping):
            tables.append(dict(item))
        else:
            raise TypeError(f"cannot evaluate on {item!r}: give a task kind, a spec table or an EvalTaskSpec")
    if not built and not tables:
        raise SpecError([("tasks", "no task given (e.g. --task pope,gqa)")], source)
    for text in overrides:
        keys, value = parse_override(text)
        matching = [t for t in tables if isinstance(t, dict) and t.get("kind") == keys[0]]
        if len(keys) < 2 or not matching:
            kinds = ", ".join(str(t.get("kind")) for t in tables if isinstance(t, dict)) or "none"
            raise SpecError([(keys[0], f"override {text!r} must be KIND.FIELD=VALUE for a task being evaluated "
                                       f"(tasks: {kinds})")], source)
        for table in matching:
            target = table
            for key in keys[1:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = value
    if tables:
        specs = structure({"tasks": tables}, EvalSpec, source).tasks
        data_root = None if root is None else str(root)
        built.extend(spec.build(root=data_root) for spec in specs)
    names = [task.name for task in built]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SpecError([("tasks", f"task {n!r} is listed more than once") for n in repeated], source)
    return built


def select(examples: Sequence[Any], limit: int | None) -> list[Any]:
    """All examples, or a fixed random subset of ``limit`` of them in their original order."""
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    picked = sorted(random.Random(LIMIT_SEED).sample(range(len(examples)), limit))
    return [examples[i] for i in picked]


def _checked_examples(task: Any) -> list[Any]:
    examples = list(task.examples())
    if not examples:
        raise DataError(f"{task.name}: the task has no examples (is the annotation file empty?)")
    seen: dict[str, str] = {}
    for example in examples:
        if example.id in seen:
            raise DataError(f"{task.name}: example id {example.id!r} appears twice ({seen[example.id]} and "
                            f"{example.source})")
        seen[example.id] = example.source
    return examples


# -- the loop ---------------------------------------------------------------------------------------------------------
class _Images:
    """Map-style dataset: each example's transformed image (None without one), for a DataLoader."""

    def __init__(self, task_name: str, examples: Sequence[Any], transform: Callable[[Any], Any]) -> None:
        self.task_name, self.examples, self.transform = task_name, examples, transform

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        from prism_core.data.conversations import load_image

        example = self.examples[index]
        if example.image is None:
            return index, None
        image = load_image(Path(example.image), f"{self.task_name}: {example.source or example.id}")
        return index, self.transform(image)


def _as_batch(items: list[tuple[int, Any]]) -> tuple[list[int], list[Any]]:
    return [i for i, _ in items], [p for _, p in items]


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """``model.eval()`` inside the block; afterwards every submodule's own training flag as it was (frozen
    backbones stay in eval mode under a training model)."""
    modules = list(model.modules()) if hasattr(model, "modules") else []
    flags = [m.training for m in modules]
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        for module, flag in zip(modules, flags, strict=True):
            module.training = flag


def all_gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's records, on every rank (``torch.distributed`` default group)."""
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, records)
    return [record for part in parts for record in part]


def run_task(
    vlm: Any,
    task: Any,
    *,
    batch_size: int = 32,
    limit: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
    autocast: Callable[[], Any] | None = None,
) -> TaskResult | None:
    """Answer ``task``'s examples (this rank's share when ``world_size > 1``) and score them on rank 0.

    Returns the result on rank 0 and None elsewhere. ``gather`` collects every rank's records (default:
    ``torch.distributed``'s all-gather); ``autocast`` makes the context the model runs in (e.g. bf16 autocast).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    examples = select(_checked_examples(task), limit)
    mine = examples[rank::world_size]
    loader = DataLoader(_Images(task.name, mine, vlm.image_transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_as_batch)
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(examples), desc=task.name, unit="q", disable=not progress or rank != 0, dynamic_ncols=True)
    with eval_mode(vlm), torch.inference_mode(), (autocast() if autocast else contextlib.nullcontext()):
        for indices, pixels in loader:
            batch = [mine[i] for i in indices]
            answered = task.predict(vlm, batch, pixels)
            if len(answered) != len(batch) or any(r.get("id") != e.id for r, e in zip(answered, batch, strict=True)):
                raise RuntimeError(f"{task.name}: predict must return one record per example, in order, each with "
                                   "the example's id")
            records.extend(answered)
            bar.update(min(len(batch) * world_size, len(examples) - bar.n))
    bar.close()
    if world_size > 1:
        records = (gather or all_gather_records)(records)
    if rank != 0:
        return None
    order = {example.id: position for position, example in enumerate(examples)}
    records.sort(key=lambda record: order[record["id"]])
    metrics = task.score(records)
    return TaskResult(task.name, task.headline, metrics, records, time.perf_counter() - started)


# -- models, files, the table ---------------------------------------------------------------------------------------
def load_model(model: Any, *, device: str | None = None, hf_token: str | None = None) -> Any:
    """A model object as is; a run directory, saved model or model id loaded as ``prism generate`` loads it (on
    the GPU in bf16 when there is one)."""
    if hasattr(model, "generate_batch"):
        return model
    from types import SimpleNamespace

    from prism_core.cli.generate import _load

    return _load(SimpleNamespace(model=str(model), device=device, hf_token=hf_token))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def predictions_file(out_dir: str | os.PathLike[str], task_name: str) -> Path:
    return Path(out_dir) / f"predictions-{task_name}.jsonl"


def write_results(out_dir: str | os.PathLike[str], report: dict[str, Any], results: Sequence[TaskResult]) -> Path:
    """``out_dir/results.json`` plus ``predictions-TASK.jsonl`` per task (each written whole or not at all)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in result.records)
        _write_atomic(predictions_file(out, result.name), lines)
    path = out / RESULTS_FILE
    _write_atomic(path, json.dumps(report, indent=2) + "\n")
    return path


def report_of(results: Sequence[TaskResult], **about: Any) -> dict[str, Any]:
    return {**about, "tasks": {result.name: result.summary() for result in results}}


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{100 * value:.2f}" if 0 <= value <= 1 else f"{value:.4g}"


def format_summary(report: Mapping[str, Any]) -> str:
    """Each task's headline metric, then its other top-level numbers (fractions shown as percentages)."""
    rows = [("task", "metric", "value", "n", "q/s")]
    for name, summary in report["tasks"].items():
        metrics = summary["metrics"]
        keys = [summary["headline"], *(k for k, v in metrics.items()
                                       if k != summary["headline"] and isinstance(v, (int, float)))]
        for i, key in enumerate(keys):
            first = i == 0
            speed = summary.get("examples_per_s")
            rows.append((name if first else "", key, _cell(metrics[key]), str(summary["num_examples"]) if first
                         else "", f"{speed:.1f}" if first and speed else ""))
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  "
                     f"{r[4]:>{widths[4]}}".rstrip() for r in rows)


def flat_metrics(report: Mapping[str, Any], prefix: str = "eval") -> dict[str, float]:
    """``{"eval/pope/accuracy": 0.85, "eval/pope/adversarial/f1": 0.8, ...}``: the numbers a tracker logs."""
    flat: dict[str, float] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for sub, item in value.items():
                walk(item, f"{key}/{sub}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = float(value)

    for name, summary in report["tasks"].items():
        walk(summary["metrics"], f"{prefix}/{name}")
    return flat


# -- the entry point --------------------------------------------------------------------------------------------------
def evaluate(
    model: Any,
    tasks: Any,
    *,
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    out_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    num_workers: int = 0,
    progress: bool = True,
    device: str | None = None,
    hf_token: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (a model, a run directory, a saved model or a model id) on ``tasks`` (``"pope,gqa"``,
    kinds, spec tables or specs; see ``build_tasks``) whose files are under the data ``root``.

    Returns the report ``results.json`` holds: ``{"tasks": {name: {"headline", "metrics", "num_examples",
    "seconds", "examples_per_s"}}, ...}``. With ``out_dir`` the report and each task's predictions are written
    there. Raises ``SpecError`` for a bad task list and ``prism_core.data.DataError`` for missing or malformed data.
    """
    built = build_tasks(tasks, root=root, overrides=overrides)
    vlm = load_model(model, device=device, hf_token=hf_token)
    results = []
    for task in built:
        result = run_task(vlm, task, batch_size=batch_size, limit=limit, num_workers=num_workers, progress=progress)
        assert result is not None
        results.append(result)
    named = str(model) if isinstance(model, (str, os.PathLike)) else None
    report = report_of(results, model=named, limit=limit, batch_size=batch_size)
    if out_dir is not None:
        write_results(out_dir, report, results)
    return report


__all__ = ["LIMIT_SEED", "RESULTS_FILE", "TaskResult", "all_gather_records", "build_tasks", "eval_mode", "evaluate",
           "flat_metrics", "format_summary", "load_model", "report_of", "run_task", "select", "write_results"]
