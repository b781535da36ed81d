"""``prism data prepare``: added to core's ``prism data`` through the ``prism_add_cli_commands`` hook.

Torch-free, and the preparation code is imported only when the command runs, so ``prism --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from prism_core.hooks import hookimpl

DATASET_IDS = ("llava-v15", "llava-multimodal", "llava-lvis4v", "llava-lrv", "llava-lvis4v-lrv",
               "llava-laion-cc-sbu-558k", "llava-v1.5-instruct", "lvis-instruct4v", "lrv-instruct")


def prepare_command(module: str) -> Callable[[argparse.Namespace], int]:
    """``prism data prepare``'s action for the ids a plugin adds: ``module``'s ``prepare(id, root, mirror=,
    checksums_file=, progress=)``, imported when the command runs; a ``PrepareError`` is said in one line, exit 1.
    Shared with the other plugins that download data (the evaluation benchmarks)."""

    def run(args: argparse.Namespace) -> int:
        from prism_plugin_llava_data.prepare import PrepareError

        prepare = importlib.import_module(module).prepare
        try:
            prepare(args.id, args.root, mirror=args.mirror, checksums_file=args.checksums, progress=not args.quiet)
        except PrepareError as exc:
            print(f"prism data prepare: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


_prepare = prepare_command("prism_plugin_llava_data.prepare")


@hookimpl
def prism_add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    from prism_core.cli.data import prepare_ids

    # prism data prepare is shared with other plugins that download data (e.g. the evaluation benchmarks).
    prepare_ids(subparsers, {name: "LLaVA data (a `llava` preset or a download group)" for name in DATASET_IDS},
                _prepare)
