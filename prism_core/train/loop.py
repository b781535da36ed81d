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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from prism_core.data import DataError
from prism_core.evaluation.training import TrainingEvaluation
from prism_core.hooks import get_plugin_manager
from prism_core.materialize import materialize
from prism_core.spec import RunSpec, TrainStrategySpec, dumps_spec, structure_component, to_dict
from prism_core.train import checkpoint as ckpt
from prism_core.train import resume as resuming
from prism_core.train.agree import agree, any_rank
from prism_core.train.distributed import unwrap
from prism_core.train.flops import flops_model, peak_flops_per_device
from prism_core.train.lock import RunLock, RunLockedError
from prism_core.train.optim import build_optimizer, build_scheduler
from prism_core.train.run_dir import SPEC_FILE, RunDirError, create_run_dir, run_dir_for
from prism_core.train.skips import SkipTally
from prism_core.train.trackers import check_trackers, make_trackers
from prism_core.train.validation import Validation
from prism_core.types import Batch


@dataclass
class TrainParts:
    """What a spec builds besides the strategy: the (unwrapped) model, on the meta device or already real, and its
    data. The strategy's ``wrap`` materialises a meta model where it will train.

    ``save_model(model, dir)`` writes a consolidated export; ``rebuild_model()`` makes a fresh unsharded copy (on
    meta: the gathered state is then assigned, not copied) to load a gathered state into (sharded runs). Tests pass
    stand-ins.
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
    stop_signal: int | None = None  # the signal that stopped the run (saved first), e.g. signal.SIGTERM


def build_parts(spec: RunSpec) -> TrainParts:
    """The real composition: ``build(spec.model)`` on the meta device plus ``spec.data`` tokenized for it."""
    from prism_core.composition import build as build_model
    from prism_core.data.collate import Collator

    if spec.data is None:
        raise ValueError("the spec has no [data] table: nothing to train on")
    vlm = build_model(spec.model, device="meta")
    dataset = spec.data.build(tokenizer=vlm.tokenizer, prompt_format=vlm.prompt_format,
                              image_transform=vlm.image_transform, split="train", stage=spec.train.stage)
    collator = Collator(vlm.tokenizer.pad_token_id, spec.train.max_length, image_tokens=vlm.num_image_tokens,
                        on_bad_example=getattr(spec.data, "on_bad_example", "error"), packing=spec.train.packing)

    def save_model(model: torch.nn.Module, out: Path) -> None:
        from prism_core.io import save

        save(model, out)

    return TrainParts(vlm, dataset, collator, vlm.num_image_tokens, save_model,
                      lambda: build_model(spec.model, load_init_weights=False, device="meta"))


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
    """SIGTERM / SIGINT set a flag; the loop checks it after each step (on every rank), saves and exits (``prism-run``
    then exits 128 + the signal number: 143 / 130, what schedulers expect of a job stopped by a signal)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        with contextlib.suppress(ValueError):  # not the main thread: signals cannot be caught here
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.signal = self.signal or signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _forward_kwargs(batch: Batch) -> dict[str, Any]:
    # Through the wrapper's __call__ (DDP / FSDP hooks run there), never via a method like forward_batch. No
    # logits: the loss is computed from the LLM's hidden states chunk by chunk (PrismVLM.forward).
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels,
            "pixel_values": batch.pixel_values, "multimodal_indices": batch.multimodal_indices,
            "sources": batch.sources, "example_ids": batch.example_ids, "image_positions": batch.image_positions,
            "logits": False}


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
            torch.tensor(float(batch.num_examples), device=device),
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


def _take(batches: Any, count: int, epoch: int, epoch_step: int, steps_per_epoch: int) -> tuple[list[Batch], Any]:
    """The next step's micro-batches, or the data error met taking them (every rank then stops together)."""
    try:
        micro_batches = list(islice(batches, count))
    except DataError as exc:
        return [], exc
    if len(micro_batches) < count:
        return micro_batches, RuntimeError(f"epoch {epoch} ended after {epoch_step} of {steps_per_epoch} steps: the "
                                           f"data loader yielded fewer batches than its sampler promised")
    return micro_batches, None


# -- the recipe -----------------------------------------------------------------------------------------------------
def train(
    spec: RunSpec,
    *,
    source: str = "spec",
    resume_dir: Path | None = None,
    resume_step: int | None = None,
    parts_factory: Callable[[RunSpec], TrainParts] = build_parts,
) -> TrainResult:
    """Run (or, with ``resume_dir``, continue) the training ``spec`` describes. Every rank calls this.

    A resume continues from the newest intact checkpoint (or ``resume_step``'s) under the rules of
    ``prism_core.train.resume``; the run directory is locked for the whole run (``prism_core.train.lock``)."""
    cfg = spec.train
    check_trackers(cfg.trackers)  # fail before anything expensive

    # 1. Strategy: process group, rank, device.
    strategy_spec = cfg.strategy or structure_component({"kind": "single"}, TrainStrategySpec)
    strategy = strategy_spec.build()
    strategy.setup()
    if hasattr(strategy, "configure_for"):
        strategy.configure_for(cfg)
    rank0 = strategy.rank == 0
    lock: RunLock | None = None
    try:
        # 2. Run directory (rank 0 picks the timestamped name; every rank agrees on it), locked by rank 0 for the
        #    run. On resume: the checkpoint to continue from (verified), and whether the spec's changes are allowed.
        timestamp = _agree_on_timestamp(strategy)
        run_dir = Path(resume_dir) if resume_dir is not None else run_dir_for(spec, source, timestamp)
        error = None
        if rank0:
            try:
                lock = RunLock(run_dir)
                lock.acquire()
                if resume_dir is None:
                    create_run_dir(run_dir, spec)
            except (RunLockedError, RunDirError) as exc:
                error = exc
        agree(strategy, error)
        choice, changes, said = None, [], []
        if resume_dir is not None:
            if rank0:
                ckpt.remove_stale(run_dir)
            choice = resuming.choose(run_dir, strategy, resume_step)
            changes = resuming.check_spec(choice, spec, run_dir / SPEC_FILE)
            said = choice.notes + resuming.set_aside(choice, strategy)
            if changes:
                said.append(f"resuming from step {choice.step} with spec changes: "
                            + "; ".join(map(str, changes)))
            resuming.say(said, strategy)

        # 3. Model: built on the meta device, frozen per stage, activation checkpointing, then wrapped by the
        # strategy, which materialises it where it trains (sharded strategies: each rank only its shards).
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        parts = parts_factory(spec)
        model = parts.model
        if not getattr(strategy, "accepts_meta", False):  # a strategy plugin that predates meta-device models
            materialize(model)
        model.configure_trainable(cfg.stage, cfg.trainable)
        if cfg.adapter is not None:  # [train.adapter]: the adapter and fully_trained train, the rest is frozen
            from prism_core.adapters import adapt

            adapt(model, cfg.adapter, seed=cfg.seed, source=source)
        if cfg.activation_checkpointing:
            apply_activation_checkpointing(model)
        if cfg.compile:
            from prism_core.train.compilation import compile_blocks

            compile_blocks(model)
        if hasattr(model, "keep_all_branches_in_graph"):
            # Every trainable parameter gets a gradient every step (zero when a text-only micro-batch leaves the
            # projector unused). DDP/FSDP need this for their collectives; turning it on for one process too keeps
            # AdamW's updates (momentum, decay) the same however many ranks share the batch.
            model.keep_all_branches_in_graph = True
        flops = flops_model(model)
        wrapped = strategy.wrap(model)
        if cfg.adapter is not None:  # values taken from the base weights (DoRA), now real where they train
            unwrap(wrapped).adapter.after_materialize(unwrap(wrapped))

        # 4. Data: this rank's share of single-modality, length-grouped global batches.
        from prism_core.data.collate import build_dataloader
        from prism_core.data.sampler import ModalityLengthSampler

        sampler = ModalityLengthSampler(
            parts.dataset.modality_lengths(), global_batch_size=cfg.global_batch_size,
            per_device_batch_size=cfg.per_device_batch_size, rank=strategy.rank, world_size=strategy.world_size,
            seed=cfg.seed, image_tokens=parts.image_tokens, packing=cfg.packing)
        loader = build_dataloader(parts.dataset, collator=parts.collator, sampler=sampler,
                                  per_device_batch_size=cfg.per_device_batch_size, num_workers=cfg.num_workers,
                                  seed=cfg.seed + strategy.rank)
        accumulation = sampler.grad_accumulation_steps
        steps_per_epoch = sampler.num_global_batches
        total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch

        # 5. Optimizer and schedule.
        optimizer = build_optimizer(unwrap(wrapped), learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                    learning_rates=_own_learning_rates(unwrap(wrapped), cfg))
        scheduler = build_scheduler(optimizer, schedule=cfg.lr_schedule, total_steps=total_steps,
                                    warmup_ratio=cfg.warmup_ratio)

        # 6. Resume: model, optimizer, RNG, schedule, skip counts and the data position of the chosen checkpoint;
        #    then the spec's schedule and optimizer hyperparameters where the resume changed them.
        step, epoch, epoch_step = 0, 0, 0
        tally = SkipTally(strategy, getattr(parts.dataset, "skipped_at_load", ()))
        if choice is not None and choice.path is not None:
            fresh = [{"weight_decay": group["weight_decay"], "initial_lr": group["initial_lr"]}
                     for group in optimizer.param_groups]
            state = ckpt.load_checkpoint(choice.path, model=wrapped, optimizer=optimizer, strategy=strategy)
            scheduler.load_state_dict(state["scheduler"])
            if {c.path for c in changes} & resuming.SCHEDULE_FIELDS:
                saved_lr = scheduler.get_last_lr()[0]
                resuming.apply_hyperparameters(optimizer, scheduler, fresh, cfg.learning_rate)
                resuming.say([f"learning rate at step {state['step']}: {saved_lr:.4g} → "
                              f"{scheduler.get_last_lr()[0]:.4g}"], strategy)
            step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
            if state["data"] is not None:
                try:
                    loader.load_state_dict(state["data"])
                except ValueError as exc:
                    raise resuming.ResumeError(f"{choice.path}: {exc}") from None
            if state.get("skips") is not None:
                tally.load_state_dict(state["skips"])
            strategy.barrier()
        spec_text = dumps_spec(spec) if rank0 else None

        def save(at_step: int) -> Path:
            mid_epoch = 0 < epoch_step < steps_per_epoch
            tally.sync()
            trainer_state = {"step": at_step, "epoch": epoch, "epoch_step": epoch_step,
                             "scheduler": scheduler.state_dict(), "total_steps": total_steps,
                             "data": loader.state_dict() if mid_epoch else None, "skips": tally.state_dict()}
            path = ckpt.save_checkpoint(run_dir, at_step, model=wrapped, optimizer=optimizer, strategy=strategy,
                                        trainer_state=trainer_state, keep_last=cfg.keep_last, spec_text=spec_text)
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
        evaluation = TrainingEvaluation(spec, strategy=strategy, run_dir=run_dir, trackers=trackers)  # [eval] tasks
        validation = Validation(spec, model=model, strategy=strategy, trackers=trackers,  # [train] validate_every
                                source=str(run_dir / SPEC_FILE))

        # 8. Steps, then the final checkpoint, with SIGTERM / SIGINT saving first (a signal during the final save
        # lets it finish, then stops before the export).
        interrupted = stopped = False
        with StopRequest() as stop, contextlib.closing(progress):
            while step < total_steps and not interrupted and not stopped:
                if epoch_step >= steps_per_epoch:
                    epoch, epoch_step = epoch + 1, 0
                loader.set_epoch(epoch)
                batches = iter(loader)
                while step < total_steps and epoch_step < steps_per_epoch:
                    micro_batches, error = _take(batches, accumulation, epoch, epoch_step, steps_per_epoch)
                    if strategy.world_size > 1:  # a rank without its batches must not leave the others waiting
                        agree(strategy, error)
                    elif error is not None:
                        raise error
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
                    stop_now = tally.step(loader.take_skipped(), stop.requested)  # collective: counts and stop
                    report = (tally.end_epoch(epoch, step)
                              if epoch_step == steps_per_epoch or step == total_steps else None)
                    metrics = {**metrics, **tally.metrics(with_files=report is not None)}
                    if rank0 and (step % cfg.log_every == 0 or step == total_steps or report):
                        for tracker in trackers:
                            tracker.log(metrics, step)
                    if rank0 and report:
                        progress.write(f"prism-run: {report}", file=sys.stderr)
                    progress.update(1)
                    progress.set_postfix(loss=f"{stats.loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                    if cfg.save_every is not None and step % cfg.save_every == 0:
                        save(step)
                    evaluation.after_step(wrapped, step, total_steps)
                    if validation.after_step(wrapped, step):  # train.stop_when holds: finish as at the end
                        stopped = True
                        break
                    if stop_now:
                        interrupted = True
                        break
            progress.close()
            save(step)
            interrupted = any_rank(strategy, interrupted or stop.requested)  # every rank exports, or none

        # 9. Consolidated export.
        export_dir = None
        if not interrupted:
            export_dir = export_model(wrapped, strategy, parts, run_dir / "model")
            evaluation.at_end(wrapped, step)
        for tracker in trackers:
            tracker.close()
        if rank0 and interrupted:
            print(f"stopped at step {step}; continue with: prism-run --resume {run_dir}", flush=True)
        return TrainResult(run_dir, step, total_steps, interrupted, export_dir, stop.signal if interrupted else None)
    finally:
        if lock is not None:
            lock.release()
        strategy.teardown()


def _metrics(stats: StepStats, lr: float, seconds: float, epoch: int, flops: Any, peak: float | None,
             world_size: int) -> dict[str, float]:
    metrics = {
        "loss": stats.loss, "learning_rate": lr, "grad_norm": stats.grad_norm, "epoch": float(epoch),
        "step_time_s": seconds, "samples_per_s": stats.samples / seconds, "tokens_per_s": stats.llm_tokens / seconds,
        "supervised_tokens": float(stats.supervised_tokens),
    }
    if peak is not None:
        metrics["mfu"] = (flops.step_flops(stats.llm_tokens, stats.images, stats.supervised_tokens) / seconds
                          / (peak * world_size))
    return metrics


def _own_learning_rates(model: torch.nn.Module, cfg: Any) -> dict[str, float] | None:
    """Parameters with a peak learning rate other than ``train.learning_rate`` (an adapter's fully trained ones)."""
    if cfg.adapter is None:
        return None
    from prism_core.adapters import fully_trained_learning_rates

    return fully_trained_learning_rates(model, cfg.adapter)


def export_model(wrapped: torch.nn.Module, strategy: Any, parts: TrainParts, out_dir: Path) -> Path | None:
    """Consolidated weights in ``prism_core.load``'s layout (collective; rank 0 writes). An adapted model gathers
    only what trained (its state dict) and saves it beside a reference to its base."""
    if parts.save_model is None:
        return None
    model = unwrap(wrapped)
    if strategy.sharded and getattr(model, "adapter", None) is not None:
        from prism_core.adapters import adapter_keys
        from prism_core.io import save_adapted

        state = strategy.full_state_dict(wrapped)
        if strategy.rank == 0:
            save_adapted(model.spec, model.adapter, state, adapter_keys(model), out_dir)
        strategy.barrier()
        return out_dir
    if not strategy.sharded:
        if strategy.rank == 0:
            parts.save_model(unwrap(wrapped), out_dir)
        strategy.barrier()
        return out_dir
    state = strategy.full_state_dict(wrapped)
    if strategy.rank == 0:
        if parts.rebuild_model is None:
            raise RuntimeError("a sharded export needs TrainParts.rebuild_model")
        fresh = materialize(parts.rebuild_model(), state=state, strict=True)  # assigned where fresh is on meta
        parts.save_model(fresh, out_dir)
    strategy.barrier()
    return out_dir

