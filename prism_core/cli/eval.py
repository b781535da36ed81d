"""``prism eval RUN_DIR``: exact-match accuracy of a trained run's model, with the blind control."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a run's model on held-out data (writes eval.json)")
    parser.add_argument("run_dir", type=Path, help="a run directory written by prism-run")
    parser.add_argument("--split", help="data split to evaluate (default: the spec's eval split, 'test')")
    parser.add_argument("--max-examples", type=int, help="evaluate at most this many examples")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prism_core.evaluate import evaluate_run, format_report

    report, path = evaluate_run(args.run_dir, split=args.split, max_examples=args.max_examples)
    print(format_report(report))
    print(f"wrote {path}")
    return 0
