"""The ``prism`` command: a subcommand per module of this package that defines ``register(subparsers)``, plus
whatever installed plugins add through the ``prism_add_cli_commands`` hook. Nothing here imports torch."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import prism_core
from prism_core.spec import SpecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prism", description="Train and run visually-conditioned language models.")
    parser.add_argument("--version", action="version", version=f"prism-core {prism_core.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    package = importlib.import_module("prism_core.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in ("main", "run"):
            continue
        module = importlib.import_module(f"prism_core.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    from prism_core.hooks import get_plugin_manager

    get_plugin_manager().hook.prism_add_cli_commands(subparsers=subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SpecError as exc:  # a user's mistake: list every problem, no traceback
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `prism plugins | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
