"""``[eval]`` tasks during training: every ``eval.every`` optimizer steps and once training ends, on the model being
trained, each rank answering its share of the examples (``distribute = "shard"``) or rank 0 alone (``"rank0"``).

Rank 0 logs the metrics to the run's trackers (``metrics.jsonl`` and any other) as ``eval/TASK/METRIC`` at the step,
and writes ``RUN_DIR/evaluation/step-NNNNNN/`` (``results.json`` and the predictions). The tasks read their
annotation files when the evaluation is set up, so missing data fails the run before its first step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prism_core.evaluation import build_tasks, flat_metrics, format_summary, report_of, run_task, write_results


class TrainingEvaluation:
    """Built once per run on every rank; the loop calls ``after_step`` after each optimizer step and ``at_end``."""

    def __init__(self, spec: Any, *, strategy: Any, run_dir: Path, trackers: list[Any]) -> None:
        self.settings = settings = spec.eval
        self.strategy, self.run_dir, self.trackers = strategy, Path(run_dir), trackers
        self.precision = spec.train.precision
        self.num_workers = spec.train.num_workers
        self.tasks: list[Any] = []
        if settings is None or not settings.tasks or (settings.every is None and not settings.at_end):
            return
        if getattr(strategy, "sharded", False):
            kind = spec.train.strategy.kind if spec.train.strategy is not None else "?"
            raise ValueError(f"eval.tasks during training need every rank to hold the whole model (strategies "
                             f"single, ddp); under {kind!r} set eval.every = none and eval.at_end = false, and "
                             f"evaluate the exported model after training: prism eval {run_dir}")
        self.tasks = build_tasks(settings.tasks, root=settings.root, source=f"{run_dir / 'spec.toml'} [eval]")

    @property
    def enabled(self) -> bool:
        return bool(self.tasks)

    def after_step(self, model: Any, step: int, total_steps: int) -> None:
        every = self.settings.every if self.enabled else None
        if every and step % every == 0 and not (step == total_steps and self.settings.at_end):
            self.run(model, step)

    def at_end(self, model: Any, step: int) -> None:
        if self.enabled and self.settings.at_end:
            self.run(model, step)

    def run(self, model: Any, step: int) -> dict[str, Any] | None:
        """Evaluate every task at ``step`` (collective: every rank calls it); the report on rank 0."""
        import torch
        from tqdm import tqdm

        from prism_core.train.distributed import unwrap

        strategy, settings = self.strategy, self.settings
        shard = settings.distribute == "shard"
        rank, world = strategy.rank, strategy.world_size
        device_type = strategy.device.type

        def autocast() -> Any:
            return torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

        vlm = unwrap(model)
        results = []
        if shard or rank == 0:
            for task in self.tasks:
                result = run_task(vlm, task, batch_size=settings.batch_size, limit=settings.limit,
                                  num_workers=self.num_workers, progress=rank == 0, rank=rank if shard else 0,
                                  world_size=world if shard else 1, autocast=autocast)
                if result is not None:
                    results.append(result)
        strategy.barrier()
        if rank != 0:
            return None
        report = report_of(results, step=step, limit=settings.limit)
        write_results(self.run_dir / "evaluation" / f"step-{step:06d}", report, results)
        metrics = flat_metrics(report)
        for tracker in self.trackers:
            tracker.log(metrics, step)
        tqdm.write(f"evaluation at step {step}:\n{format_summary(report)}")
        return report
