"""``prism eval RUN_OR_MODEL --task pope,gqa --root DATA [--limit N]``: benchmark tasks, with a summary table,
``results.json`` and a ``predictions-TASK.jsonl`` per task. ``prism eval RUN_DIR`` alone runs the run's
``[eval]`` tasks, or, without tasks, exact match on its held-out split with the blind control (``eval.json``)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DESCRIPTION = """Evaluate a model on benchmark tasks (`prism plugins` lists the installed kinds under "evaluation
task"; `prism data prepare` downloads their data). RUN_OR_MODEL is a run directory, a saved model, or a model id.
Without --task, a run directory is evaluated on its spec's [eval] tasks, or on its held-out split (exact match
with the blind control, written to eval.json). Exit 2: a bad task list or missing/malformed data."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model on benchmark tasks, or a run on held-out data",
                                   description=DESCRIPTION)
    parser.add_argument("model", metavar="RUN_OR_MODEL", help="a run directory, a saved prism model, or a model id")
    parser.add_argument("--task", help="comma-separated task kinds, e.g. pope,gqa (default: the run's [eval] tasks)")
    parser.add_argument("--root", help="data root the tasks read their files from (default: the run's eval.root)")
    parser.add_argument("--limit", type=int, help="evaluate each task on a fixed subset of N examples")
    parser.add_argument("--set", action="append", default=[], metavar="KIND.FIELD=VALUE", dest="overrides",
                        help="a task field, e.g. --set pope.splits='[\"random\"]' (repeatable)")
    parser.add_argument("--batch-size", type=int, help="examples per batched model call (default: eval.batch_size "
                                                       "of the run, else 32)")
    parser.add_argument("--out", type=Path, help="directory for results.json and the predictions (default: "
                                                 "RUN_DIR/evaluation/model, else prism-eval/MODEL)")
    parser.add_argument("--workers", type=int, default=2, help="image-loading worker processes (0: none)")
    parser.add_argument("--device", help="e.g. cuda, cpu (default: cuda when available)")
    parser.add_argument("--hf-token", help="token for gated models (default: HF_TOKEN / stored)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--split", help="held-out evaluation: the data split (default: the spec's eval split)")
    parser.add_argument("--max-examples", type=int, help="held-out evaluation: at most this many examples")
    parser.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"prism eval: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from prism_core.data import DataError

    path = Path(args.model)
    run_spec = None
    if (path / "spec.toml").is_file():  # a run directory (a saved model keeps model.toml instead)
        from prism_core.train.run_dir import load_run_spec

        run_spec = load_run_spec(path)
    settings = run_spec.eval if run_spec is not None else None
    for name in ("limit", "batch_size", "max_examples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            return _fail(f"--{name.replace('_', '-')} must be >= 1")
    if args.task is None:
        if run_spec is None:
            return _fail(f"{args.model} is not a run directory: name the tasks with --task, e.g. --task pope,gqa")
        if settings is None or not settings.tasks or args.split or args.max_examples:
            return _held_out(args, path)
    elif args.split or args.max_examples:
        return _fail("--split and --max-examples belong to the held-out evaluation; with --task use --limit")

    from prism_core.evaluation import RESULTS_FILE, evaluate, format_summary

    if args.task is None:
        tasks = list(settings.tasks)
    else:  # a kind the run's [eval] lists keeps the run's fields
        by_kind = {task.kind: task for task in (settings.tasks if settings else ())}
        tasks = [by_kind.get(kind.strip(), kind.strip()) for kind in args.task.split(",") if kind.strip()]
    root = args.root or (settings.root if settings else None)
    limit = args.limit if args.limit is not None else (settings.limit if settings and args.task is None else None)
    batch_size = args.batch_size or (settings.batch_size if settings else 32)
    out = args.out or (path / "evaluation" / "model" if run_spec is not None
                       else Path("prism-eval") / re.sub(r"[^A-Za-z0-9._+-]+", "-", args.model.strip("/")))
    try:
        report = evaluate(args.model, tasks, root=root, limit=limit, batch_size=batch_size, out_dir=out,
                          overrides=args.overrides, num_workers=args.workers, progress=not args.quiet,
                          device=args.device, hf_token=args.hf_token)
    except DataError as exc:
        return _fail(str(exc))
    print(format_summary(report))
    print(f"wrote {out / RESULTS_FILE} and the predictions of {len(report['tasks'])} task(s) next to it")
    return 0


def _held_out(args: argparse.Namespace, run_dir: Path) -> int:
    from prism_core.data import DataError
    from prism_core.evaluation.conversations import evaluate_run, format_report

    try:
        report, path = evaluate_run(run_dir, split=args.split, max_examples=args.max_examples,
                                    progress=not args.quiet)
    except DataError as exc:
        return _fail(str(exc))
    print(format_report(report))
    print(f"wrote {path}")
    return 0
