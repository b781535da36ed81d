"""``prism export``: ``merged`` here (a run's adapter folded into its base: a plain prism model); plugins add their
formats (prism-plugin-prismatic's ``hf``) through :func:`export_formats` from their ``prism_add_cli_commands``
hook. Torch-free until a command runs."""

from __future__ import annotations

import argparse
import sys

from prism_core.cli import command_group


def export_formats(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The formats of ``prism export`` (created on first use), for core and plugins to add theirs to."""
    return command_group(subparsers, "export", help="export a prism model to another form or library's format",
                         dest="format", metavar="FORMAT")


def register(subparsers: argparse._SubParsersAction) -> None:
    merged = export_formats(subparsers).add_parser(
        "merged", help="fold a run's adapter (LoRA, DoRA, QLoRA) into its base weights: a plain prism model")
    merged.add_argument("model", help="a run directory trained with [train.adapter], or a saved adapted model")
    merged.add_argument("out", help="output directory (a saved prism model: prism export hf takes it)")
    merged.set_defaults(func=_merged)


def _merged(args: argparse.Namespace) -> int:
    import prism_core
    from prism_core.adapters import merge
    from prism_core.io import ModelFormatError

    try:
        vlm = prism_core.load(args.model)
    except (FileNotFoundError, ModelFormatError) as exc:
        print(f"prism export merged: {exc}", file=sys.stderr)
        return 2
    if getattr(vlm, "adapter", None) is None:
        print(f"prism export merged: {args.model} carries no adapter: it is a plain model already",
              file=sys.stderr)
        return 2
    kind = vlm.adapter.spec.kind
    out = prism_core.save(merge(vlm), args.out)
    print(f"merged the {kind} adapter into its base: {out}")
    return 0
