"""The ``prism`` command: a subcommand per module of this package that defines ``register(subparsers)``, plus
whatever installed plugins add through the ``prism_add_cli_commands`` hook. Nothing here imports torch."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import prism_core


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
    from prism_core.cli.console import show_warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    show_warnings("prism")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `prism plugins | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        # A spec error is a user's mistake: list every problem, no traceback. prism_core.spec (attrs, cattrs) is
        # not imported up front: `prism plugins` does not need it, and an error raised without it is no SpecError.
        spec = sys.modules.get("prism_core.spec")
        if spec is not None and isinstance(exc, spec.SpecError):
            print(exc, file=sys.stderr)
            return 2
        raise

if __name__ == "__main__":
    sys.exit(main())
