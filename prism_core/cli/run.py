"""``prism-run``: train from a spec, continue a run, or export a checkpoint.

    prism-run SPEC.toml [dotted.key=value ...]     train (SPEC may be a named spec; none: ``quickstart``)
    prism-run --resume RUN_DIR [--step N]          continue from the newest intact checkpoint (or step N's)
    prism-run --export RUN_DIR [--step N]          consolidated safetensors export of a checkpoint

On several ranks, the same command under torchrun (gloo on CPU, NCCL on GPU)::

    torchrun --nproc-per-node 8 $(which prism-run) SPEC.toml train.strategy.kind=fsdp
    torchrun --nproc-per-node 8 -m prism_core.cli.run SPEC.toml

Several nodes: one torchrun agent per node with ``--nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT
--rdzv-id RUN``.

Exit status: 0 done; 2 a problem the user must fix, said in one message without a traceback (every problem of a
spec, bad data naming its file and entry, a damaged or missing checkpoint, a refused spec change on resume, a run
directory in use, a full disk; ``--debug`` shows the traceback); 143 / 130 stopped by SIGTERM / SIGINT after saving
a checkpoint (128 + the signal number, what schedulers expect; ``--resume`` continues exactly); 1 anything else (a
bug: with its traceback). Importing this module (and ``--help``) does not import torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prism_core.spec import SpecError, load_spec

DEFAULT_SPEC = "quickstart"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prism-run",
        description="Train a prism VLM from a TOML spec (alone, or on N ranks under torchrun).",
        epilog="examples:\n"
               "  prism-run spec.toml train.max_steps=100 train.strategy.kind=ddp\n"
               "  torchrun --nproc-per-node 2 $(which prism-run) spec.toml train.strategy.kind=fsdp\n"
               "  prism-run --resume runs/spec-20250101-120000\n\n"
               "exit status: 0 done, 2 a problem to fix (said without a traceback; --debug shows it), "
               "143/130 stopped by SIGTERM/SIGINT after saving (resume with --resume), 1 anything else",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", nargs="?", help=f"spec file or named spec (default: {DEFAULT_SPEC})")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, values parsed as TOML")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", metavar="RUN_DIR", type=Path,
                      help="continue this run from its newest intact checkpoint (RUN_DIR/spec.toml is used; what "
                           "it may change is in docs/train-your-own.md)")
    mode.add_argument("--export", metavar="RUN_DIR", type=Path,
                      help="write a consolidated model export of a checkpoint of this run")
    parser.add_argument("--step", type=int,
                        help="with --resume or --export: the checkpoint step (default: the newest intact one)")
    parser.add_argument("--out", type=Path, help="with --export: output directory (default RUN_DIR/export-step-N)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    return parser


def _split_positionals(spec: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """``prism-run a.b=1`` means the default spec with an override, not a spec file named ``a.b=1``."""
    if spec is not None and "=" in spec and not Path(spec).exists():
        return DEFAULT_SPEC, [spec, *overrides]
    return spec or DEFAULT_SPEC, overrides


class _UsageError(Exception):
    """A wrong combination of arguments (exit 2)."""


def _export(run_dir: Path, step: int | None, out: Path | None) -> int:
    from prism_core.composition import build as build_model
    from prism_core.io import save
    from prism_core.train import checkpoint as ckpt
    from prism_core.train.run_dir import load_run_spec

    spec = load_run_spec(run_dir)
    found = dict(ckpt.list_checkpoints(run_dir))
    if not found:
        raise ckpt.CheckpointError(f"{run_dir} has no complete checkpoint")
    step = max(found) if step is None else step
    if step not in found:
        raise ckpt.CheckpointError(f"no checkpoint for step {step} in {run_dir} (steps: {sorted(found)})")
    problems = ckpt.verify(found[step])
    if problems:
        raise ckpt.CheckpointError(f"checkpoint step {step} is damaged: {'; '.join(problems)}")
    adapter = spec.train.adapter  # its checkpoints hold what trained: the base comes from its sources
    model = build_model(spec.model, load_init_weights=adapter is not None)
    if adapter is not None:
        from prism_core.adapters import adapt

        adapt(model, adapter, seed=spec.train.seed, source=str(run_dir / "spec.toml"))
    ckpt.load_model_weights(found[step], model)
    out = out or run_dir / f"export-step-{step:08d}"
    save(model, out)
    print(f"exported step {step} to {out}")
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user fixes: said in one message, exit 2."""
    from prism_core.data import DataError
    from prism_core.train.checkpoint import CheckpointError
    from prism_core.train.lock import RunLockedError
    from prism_core.train.resume import ResumeError
    from prism_core.train.run_dir import RunDirError
    from prism_core.train.trackers import TrackerUnavailableError

    return (SpecError, _UsageError, RunDirError, RunLockedError, CheckpointError, ResumeError, DataError,
            TrackerUnavailableError)


def _report(exc: BaseException) -> None:
    """Print a user error once: an error every rank raises alike is printed by rank 0 only."""
    import os

    if type(exc).__name__ == "OtherRankFailed":
        return  # the failing rank said why
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0 and (isinstance(exc, SpecError) or getattr(exc, "same_on_every_rank", False)):
        return
    text = str(exc)
    print(text if isinstance(exc, SpecError) else f"prism-run: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import time

    from prism_core.cli.console import show_warnings

    started = time.monotonic()
    args = build_parser().parse_args(argv)
    show_warnings("prism-run")
    try:
        return _main(args, started)
    except KeyboardInterrupt:  # Ctrl-C before training started (or while exporting): nothing to save
        print("prism-run: interrupted", file=sys.stderr)
        return 130
    except (SpecError, _UsageError) as exc:  # before anything imports torch
        if args.debug:
            raise
        _report(exc)
        return 2
    except Exception as exc:
        from prism_core.train.agree import OtherRankFailed

        if args.debug and not isinstance(exc, OtherRankFailed):
            raise
        if isinstance(exc, (*_user_errors(), OtherRankFailed)):
            _report(exc)
            return 2
        raise


def _main(args: argparse.Namespace, started: float) -> int:
    import time

    if args.step is not None and args.resume is None and args.export is None:
        raise _UsageError("--step goes with --resume or --export")
    if args.export is not None:
        return _export(args.export, args.step, args.out)
    if args.resume is not None:
        if args.spec is not None or args.overrides:
            raise _UsageError("--resume takes the spec from RUN_DIR/spec.toml; drop the spec and overrides (edit "
                              "RUN_DIR/spec.toml to change what a resume may change)")
        from prism_core.train.run_dir import load_run_spec

        spec, source = load_run_spec(args.resume), str(args.resume / "spec.toml")
    else:
        name, overrides = _split_positionals(args.spec, args.overrides)
        if args.spec is None or name != args.spec:
            print(f"prism-run: no spec given, running the bundled {name!r} spec "
                  f"(see it in full: prism spec fill {name})", file=sys.stderr)
        spec, source = load_spec(name, overrides), name
    from prism_core.train.loop import train

    result = train(spec, source=source, resume_dir=args.resume, resume_step=args.step)
    if result.interrupted:
        return 128 + (result.stop_signal or 15)
    print(f"finished {result.step} steps in {time.monotonic() - started:.0f} s: {result.run_dir}")
    if spec.eval is not None and spec.eval.held_out and result.export_dir is not None:
        _evaluate(result.run_dir)
        print(f"total {time.monotonic() - started:.0f} s")
    return 0


def _evaluate(run_dir: Path) -> None:
    """Held-out exact match with the blind control, then how to talk to the model (rank 0 only)."""
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    from prism_core.evaluation.conversations import evaluate_run, format_report

    report, path = evaluate_run(run_dir)
    print(f"\nheld-out evaluation, {report['split']} split. blind: the same questions with the image zeroed, the model "
          "choosing among each type's valid answers (blind gen: answering freely)")
    print(format_report(report))
    print(f"wrote {path}")
    from prism_core.plot import plot_into_run_dir

    print(plot_into_run_dir(run_dir))
    sample = next((s for s in report["samples"] if s.get("image")), None)
    image, question = (sample["image"], sample["question"]) if sample else ("IMAGE.png", "What is in the image?")
    print(f"\nask it something:  prism generate {run_dir} --image {image} --prompt {question!r}")
    print(f"or chat with it:   prism chat {run_dir}")


if __name__ == "__main__":
    sys.exit(main())
