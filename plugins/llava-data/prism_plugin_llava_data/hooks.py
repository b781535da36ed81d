"""``prism data prepare``: added to the ``prism`` command line through the ``prism_add_cli_commands`` hook.

Torch-free, and the preparation code is imported only when the command runs, so ``prism --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from prism_core.hooks import hookimpl

DATASET_IDS = ("llava-v15", "llava-multimodal", "llava-lvis4v", "llava-lrv", "llava-lvis4v-lrv",
               "llava-laion-cc-sbu-558k", "llava-v1.5-instruct", "lvis-instruct4v", "lrv-instruct")


def _prepare(args: argparse.Namespace) -> int:
    from prism_plugin_llava_data.prepare import PrepareError, prepare

    try:
        prepare(args.id, args.root, mirror=args.mirror, checksums_file=args.checksums, progress=not args.quiet)
    except PrepareError as exc:
        print(f"prism data prepare: {exc}", file=sys.stderr)
        return 1
    return 0


@hookimpl
def prism_add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="download and prepare training data")
    commands = data.add_subparsers(dest="data_command", required=True)
    prep = commands.add_parser(
        "prepare", help="download, verify, extract and convert a data set (resumable)",
        description="Download a LLaVA data set into ROOT the way the `llava` dataset presets expect it.",
    )
    prep.add_argument("id", choices=DATASET_IDS, help="data set id (a `llava` preset or a download group)")
    prep.add_argument("--root", required=True, help="data root (the `root` field of the llava spec)")
    prep.add_argument("--mirror", default=None,
                      help="fetch every file as MIRROR/<key> over HTTP (default: $PRISM_DATA_MIRROR)")
    prep.add_argument("--checksums", default=None, help="a SHA256SUMS file ('<sha256>  <key>' per line)")
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    prep.set_defaults(func=_prepare)
