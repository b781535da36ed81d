"""The training recipe, top to bottom: strategy → run directory → model → data → optimizer → (resume) → steps.

One optimizer step takes ``global_batch_size / (per_device_batch_size × world_size)`` micro-batches per rank. The
loss of a step is the sum of token losses over every micro-batch on every rank divided by the number of supervised
tokens among them: each micro-batch backpropagates its *sum*, and the gradients are scaled by
``world_size / global_tokens`` once the token count is known (DDP and FSDP average over ranks). So micro-batches
with few supervised tokens weigh no more than their tokens, unlike the original's ``loss / accumulation_steps``.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from prism_core.hooks import get_plugin_manager
from prism_core.spec import RunSpec, TrainStrategySpec, structure_component, to_dict
from prism_core.train import checkpoint as ckpt
from prism_core.train.distributed import unwrap
from prism_core.train.flops import flops_model, peak_flops_per_device
from prism_core.train.optim import build_optimizer, build_scheduler
from prism_core.train.run_dir import create_run_dir, run_dir_for
from prism_core.train.trackers import check_trackers, make_trackers
from prism_core.types import Batch


@dataclass
class TrainParts:
    """What a spec builds besides the strategy: the (unwrapped, CPU) model and its data.

    ``save_model(model, dir)`` writes a consolidated export; ``rebuild_model()`` makes a fresh unsharded copy to
    load a gathered state into (sharded runs). Tests pass stand-ins.
    """

    model: torch.nn.Module
    dataset: Any
    collator: Any  # has ``collate(examples) -> (Batch | None, skipped)``, e.g. prism_core.data.collate.Collator
    image_tokens: int = 0
    save_model: Callable[[torch.nn.Module, Path], None] | None = None
    rebuild_model: Callable[[], torch.nn.Module] | None = None


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    total_steps: int
    interrupted: bool
    export_dir: Path | None


def build_parts(spec: RunSpec) -> TrainParts:
    """The real composition: ``compose.build(spec.model)`` plus ``spec.data`` tokenized for it."""
    from prism_core.composition import build as build_model
    from prism_core.data.collate import Collator

    if spec.data is None:
        raise ValueError("the spec has no [data] table: nothing to train on")
    vlm = build_model(spec.model)
    dataset = spec.data.build(tokenizer=vlm.tokenizer, prompt_format=vlm.prompt_format,
                              image_transform=vlm.image_transform, split="train")
    collator = Collator(vlm.tokenizer.pad_token_id, spec.train.max_length, num_patches=vlm.num_patches,
                        on_bad_example=getattr(spec.data, "on_bad_example", "error"))

    def save_model(model: torch.nn.Module, out: Path) -> None:
        from prism_core.io import save

        save(model, out)

    return TrainParts(vlm, dataset, collator, vlm.num_patches, save_model,
                      lambda: build_model(spec.model, load_init_weights=False))


# -- the pieces the recipe calls ------------------------------------------------------------------------------------
def apply_activation_checkpointing(model: torch.nn.Module) -> int:
    """Recompute each LLM decoder layer in backward (non-reentrant); returns how many layers were wrapped."""
    from functools import partial

    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )

    classes = tuple(getattr(getattr(model, "llm_backbone", None), "decoder_layer_classes", ()))
    if not classes:
        raise ValueError("train.activation_checkpointing: the LLM backbone lists no decoder_layer_classes")
    count = sum(isinstance(m, classes) for m in model.modules())
    apply_activation_checkpointing(model, checkpoint_wrapper_fn=partial(checkpoint_wrapper,
                                   checkpoint_impl=CheckpointImpl.NO_REENTRANT),
                                   check_fn=lambda m: isinstance(m, classes))
    return count


class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop checks it after each step (on every rank), saves and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        with contextlib.suppress(ValueError):  # not the main thread: signals cannot be caught here
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _forward_kwargs(batch: Batch) -> dict[str, Any]:
    # Through the wrapper's __call__ (DDP / FSDP hooks run there), never via a method like forward_batch.
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels,
            "pixel_values": batch.pixel_values, "multimodal_indices": batch.multimodal_indices,
            "sources": batch.sources}


@dataclass
class StepStats:
    loss: float
    grad_norm: float
    supervised_tokens: int
    llm_tokens: int
    samples: int
    images: int


def train_step(
    wrapped: torch.nn.Module, micro_batches: list[Batch], *, strategy: Any, optimizer: torch.optim.Optimizer,
    precision: str, max_grad_norm: float,
) -> StepStats:
    """Forward/backward every micro-batch, normalise by the global supervised-token count, clip, step."""
    device = strategy.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    counts = torch.zeros(5, dtype=torch.float64, device=device)  # loss sum, tokens, LLM tokens, rows, images
    no_sync = getattr(strategy, "no_sync", None)
    for i, batch in enumerate(micro_batches):
        batch = batch.to(device)
        last = i == len(micro_batches) - 1
        with (no_sync(wrapped) if no_sync and not last else contextlib.nullcontext()), autocast:
            out = wrapped(**_forward_kwargs(batch))
        if out.loss_sum.requires_grad:  # not so for a text-only micro-batch when only the projector trains
            out.loss_sum.float().backward()
        mask = getattr(out, "attention_mask", None)
        counts += torch.stack([
            out.loss_sum.detach().double(), out.num_tokens.double(),
            (mask if mask is not None else batch.attention_mask).sum().double(),
            torch.tensor(float(batch.input_ids.shape[0]), device=device),
            torch.tensor(float(batch.multimodal_indices.numel()), device=device),
        ])
    strategy.all_reduce_sum(counts)
    loss_sum, tokens = counts[0].item(), counts[1].item()
    scale = strategy.world_size / tokens
    for param in wrapped.parameters():
        if param.grad is not None:
            param.grad.mul_(scale)
    grad_norm = strategy.clip_grad_norm(wrapped, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(loss_sum / tokens, grad_norm, int(tokens), int(counts[2].item()), int(counts[3].item()),
                     int(counts[4].item()))


def _agree_on_timestamp(strategy: Any) -> float:
    stamp = torch.tensor([time.time() if strategy.rank == 0 else 0.0], dtype=torch.float64, device=strategy.device)
    return float(strategy.all_reduce_sum(stamp).item())


def _any_rank(strategy: Any, flag: bool) -> bool:
    return bool(strategy.all_reduce_sum(torch.tensor([float(flag)], device=strategy.device)).item() > 0)


# -- the recipe -----------------------------------------------------------------------------------------------------
def train(
    spec: RunSpec,
    *,
    source: str = "spec",
    resume_dir: Path | None = None,
    parts_factory: Callable[[RunSpec], TrainParts] = build_parts,
) -> TrainResult:
    """Run (or, with ``resume_dir``, continue) the training ``spec`` describes. Every rank calls this."""
    cfg = spec.train
    check_trackers(cfg.trackers)  # fail before anything expensive

    # 1. Strategy: process group, rank, device.
    strategy_spec = cfg.strategy or structure_component({"kind": "single"}, TrainStrategySpec)
    strategy = strategy_spec.build()
    strategy.setup()
    if hasattr(strategy, "configure_for"):
        strategy.configure_for(cfg)
    rank0 = strategy.rank == 0
    try:
        # 2. Run directory (rank 0 picks the timestamped name; every rank agrees on it).
        timestamp = _agree_on_timestamp(strategy)
        run_dir = Path(resume_dir) if resume_dir is not None else run_dir_for(spec, source, timestamp)
        if rank0 and resume_dir is None:
            create_run_dir(run_dir, spec)
        strategy.barrier()

        # 3. Model: seeded, frozen per stage, activation checkpointing, wrapped by the strategy.
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        parts = parts_factory(spec)
        model = parts.model
        model.configure_trainable(cfg.stage, cfg.trainable)
        if cfg.activation_checkpointing:
            apply_activation_checkpointing(model)
        if hasattr(model, "keep_all_branches_in_graph"):
            # Every trainable parameter gets a gradient every step (zero when a text-only micro-batch leaves the
            # projector unused). DDP/FSDP need this for their collectives; turning it on for one process too keeps
            # AdamW's updates (momentum, decay) the same however many ranks share the batch.
            model.keep_all_branches_in_graph = True
        flops = flops_model(model)
        wrapped = strategy.wrap(model)

        # 4. Data: this rank's share of single-modality, length-grouped global batches.
        from prism_core.data.collate import build_dataloader
        from prism_core.data.sampler import ModalityLengthSampler

        sampler = ModalityLengthSampler(
            parts.dataset.modality_lengths(), global_batch_size=cfg.global_batch_size,
            per_device_batch_size=cfg.per_device_batch_size, rank=strategy.rank, world_size=strategy.world_size,
            seed=cfg.seed, image_tokens=parts.image_tokens)
        loader = build_dataloader(parts.dataset, collator=parts.collator, sampler=sampler,
                                  per_device_batch_size=cfg.per_device_batch_size, num_workers=cfg.num_workers,
                                  seed=cfg.seed + strategy.rank)
        accumulation = sampler.grad_accumulation_steps
        steps_per_epoch = sampler.num_global_batches
        total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch

        # 5. Optimizer and schedule.
        optimizer = build_optimizer(unwrap(wrapped), learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = build_scheduler(optimizer, schedule=cfg.lr_schedule, total_steps=total_steps,
                                    warmup_ratio=cfg.warmup_ratio)

        # 6. Resume: model, optimizer, RNG, schedule and the data position of the latest complete checkpoint.
        step, epoch, epoch_step = 0, 0, 0
        if resume_dir is not None:
            if rank0:
                ckpt.remove_stale(run_dir)
            latest = ckpt.latest_checkpoint(run_dir)
            if latest is not None:
                state = ckpt.load_checkpoint(latest, model=wrapped, optimizer=optimizer, strategy=strategy)
                scheduler.load_state_dict(state["scheduler"])
                step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
                if state["data"] is not None:
                    loader.load_state_dict(state["data"])
            strategy.barrier()

        def save(at_step: int) -> Path:
            mid_epoch = 0 < epoch_step < steps_per_epoch
            trainer_state = {"step": at_step, "epoch": epoch, "epoch_step": epoch_step,
                             "scheduler": scheduler.state_dict(), "total_steps": total_steps,
                             "data": loader.state_dict() if mid_epoch else None}
            path = ckpt.save_checkpoint(run_dir, at_step, model=wrapped, optimizer=optimizer, strategy=strategy,
                                        trainer_state=trainer_state, keep_last=cfg.keep_last)
            if rank0:
                get_plugin_manager().hook.prism_checkpoint_saved(path=path, step=at_step, spec=spec)
            return path

        # 7. Trackers and progress (rank 0).
        trackers = make_trackers(cfg.trackers, run_dir, run_name=run_dir.name, config=to_dict(spec),
                                 resume_step=step) if rank0 else []
        progress = tqdm(total=total_steps, initial=step, disable=not rank0, desc=f"{cfg.stage}", unit="step",
                        dynamic_ncols=True)
        peak = peak_flops_per_device(strategy.device, cfg.peak_tflops)
        hooks = get_plugin_manager().hook

        # 8. Steps.
        interrupted = False
        with StopRequest() as stop:
            while step < total_steps and not interrupted:
                if epoch_step >= steps_per_epoch:
                    epoch, epoch_step = epoch + 1, 0
                loader.set_epoch(epoch)
                batches = iter(loader)
                while step < total_steps and epoch_step < steps_per_epoch:
                    micro_batches = list(islice(batches, accumulation))
                    if len(micro_batches) < accumulation:
                        raise RuntimeError(f"epoch {epoch} ended after {epoch_step} of {steps_per_epoch} steps: "
                                           f"the data loader yielded fewer batches than its sampler promised")
                    hooks.prism_before_train_step(step=step, batch=micro_batches[0])
                    started = time.perf_counter()
                    stats = train_step(wrapped, micro_batches, strategy=strategy, optimizer=optimizer,
                                       precision=cfg.precision, max_grad_norm=cfg.max_grad_norm)
                    lr = scheduler.get_last_lr()[0]
                    scheduler.step()
                    step, epoch_step = step + 1, epoch_step + 1
                    seconds = time.perf_counter() - started
                    metrics = _metrics(stats, lr, seconds, epoch, flops, peak, strategy.world_size)
                    hooks.prism_after_train_step(step=step, metrics=metrics)
                    if rank0 and (step % cfg.log_every == 0 or step == total_steps):
                        for tracker in trackers:
                            tracker.log(metrics, step)
                    progress.update(1)
                    progress.set_postfix(loss=f"{stats.loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                    if cfg.save_every is not None and step % cfg.save_every == 0:
                        save(step)
                    if _any_rank(strategy, stop.requested):
                        interrupted = True
                        break
        progress.close()

        # 9. Final checkpoint and consolidated export.
        save(step)
        export_dir = None
        if not interrupted:
            export_dir = export_model(wrapped, strategy, parts, run_dir / "model")
        for tracker in trackers:
            tracker.close()
        if rank0 and interrupted:
            print(f"stopped at step {step}; continue with: prism-run --resume {run_dir}", flush=True)
        return TrainResult(run_dir, step, total_steps, interrupted, export_dir)
    finally:
        strategy.teardown()


def _metrics(stats: StepStats, lr: float, seconds: float, epoch: int, flops: Any, peak: float | None,
             world_size: int) -> dict[str, float]:
    metrics = {
        "loss": stats.loss, "learning_rate": lr, "grad_norm": stats.grad_norm, "epoch": float(epoch),
        "step_time_s": seconds, "samples_per_s": stats.samples / seconds, "tokens_per_s": stats.llm_tokens / seconds,
        "supervised_tokens": float(stats.supervised_tokens),
    }
    if peak is not None:
        metrics["mfu"] = flops.step_flops(stats.llm_tokens, stats.images) / seconds / (peak * world_size)
    return metrics


def export_model(wrapped: torch.nn.Module, strategy: Any, parts: TrainParts, out_dir: Path) -> Path | None:
    """Consolidated weights in ``prism_core.load``'s layout (collective; rank 0 writes)."""
    if parts.save_model is None:
        return None
    if not strategy.sharded:
        if strategy.rank == 0:
            parts.save_model(unwrap(wrapped), out_dir)
        strategy.barrier()
        return out_dir
    state = strategy.full_state_dict(wrapped)
    if strategy.rank == 0:
        if parts.rebuild_model is None:
            raise RuntimeError("a sharded export needs TrainParts.rebuild_model")
        fresh = parts.rebuild_model()
        fresh.load_state_dict(state)
        parts.save_model(fresh, out_dir)
    strategy.barrier()
    return out_dir

