"""prism's command lines (``prism``, ``prism-run``). Torch-free at import."""

from __future__ import annotations

import argparse


def command_group(subparsers: argparse._SubParsersAction, name: str, *, help: str, dest: str,
                  metavar: str) -> argparse._SubParsersAction:
    """The subcommands of ``prism NAME`` (the group is created on first use), for core and plugins to add theirs to:
    ``prism data ACTION``, ``prism export FORMAT``."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help)
        parser.prism_group = parser.add_subparsers(dest=dest, metavar=metavar, required=True)
    return parser.prism_group
