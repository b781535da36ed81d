"""``prism data``: ``check`` here, for any dataset kind; plugins add their own actions (e.g. the llava plugin's
``prepare``) through :func:`data_commands` from their ``prism_add_cli_commands`` hook; ``prepare`` is shared by
every plugin that downloads data (:func:`prepare_ids`). Torch-free until a command
runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping

from prism_core.cli import command_group


def data_commands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The actions of ``prism data`` (created on first use), for core and plugins to add theirs to."""
    return command_group(subparsers, "data", help="check and prepare training data", dest="data_command",
                         metavar="ACTION")


def prepare_ids(subparsers: argparse._SubParsersAction, ids: Mapping[str, str],
                run: Callable[[argparse.Namespace], int]) -> None:
    """Add data set ids to ``prism data prepare ID --root DIR [--mirror URL] [--checksums FILE] [--quiet]``, the one
    command every plugin that downloads data shares: ``run(args)`` prepares ``args.id`` for the ids it added
    (``ids`` maps each to a one-line description, listed by ``prism data prepare --help``)."""
    actions = data_commands(subparsers)
    prepare = actions.choices.get("prepare")
    if prepare is None:
        prepare = actions.add_parser(
            "prepare", help="download, verify, extract and convert a data set (resumable)",
            description="Download a data set into ROOT the way its data or evaluation-task kind expects it.",
            formatter_class=argparse.RawDescriptionHelpFormatter)
        prepare.prism_ids = {}  # id -> (description, run)
        prepare.add_argument("id", metavar="ID", choices=prepare.prism_ids, help="data set id (listed below)")
        prepare.add_argument("--root", required=True, help="data root (the `root` the data or task spec names)")
        prepare.add_argument("--mirror", default=None,
                             help="fetch every file as MIRROR/<key> over HTTP (default: $PRISM_DATA_MIRROR)")
        prepare.add_argument("--checksums", default=None, help="a SHA256SUMS file ('<sha256>  <key>' per line)")
        prepare.add_argument("--quiet", action="store_true", help="no progress bars")
        prepare.set_defaults(func=lambda args: prepare.prism_ids[args.id][1](args))
    for name, description in ids.items():
        prepare.prism_ids[name] = (description, run)
    prepare.epilog = "data set ids:\n" + "\n".join(
        f"  {name:<26}{description}" for name, (description, _) in sorted(prepare.prism_ids.items()))


def register(subparsers: argparse._SubParsersAction) -> None:
    check = data_commands(subparsers).add_parser(
        "check", help="read every example and image of a spec's data once and report every problem",
        description="Build the spec's data as training would (same stage, tokenizer, prompt format and max_length), "
                    "read every example and decode every image in parallel, and list every problem. Exit 0: no "
                    "problem; 1: problems found; 2: the spec itself is wrong.")
    check.add_argument("spec", help="a spec file, or a named spec such as 'quickstart'")
    check.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=/data")
    check.add_argument("--workers", type=int, default=None, help="reader processes (default: the CPUs, at most 16)")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from prism_core.spec import load_spec

    spec = load_spec(args.spec, args.overrides)  # a SpecError exits 2 in `prism`
    if spec.data is None:
        print(f"prism data check: {args.spec} has no [data] table", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print("prism data check: --workers must be >= 0", file=sys.stderr)
        return 2
    from prism_core.data import DataError
    from prism_core.data.check import check_data

    print(f"checking {spec.data.kind} data for train.stage = {spec.train.stage!r}", file=sys.stderr)
    try:
        report = check_data(spec, workers=args.workers, progress=not args.quiet,
                            on_problem=lambda bad: print(f"{bad.source}: {bad.reason}: {bad.message}"))
    except DataError as exc:  # the data cannot even be read: a missing or malformed annotation file
        print(f"prism data check: {exc}", file=sys.stderr)
        return 1
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.summary())
    return 1 if report.problems else 0
