"""``prism spec validate`` and ``prism spec fill``: check a spec, or write it with every default filled in."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("spec", help="validate or fill in a spec")
    actions = parser.add_subparsers(dest="spec_command", metavar="ACTION", required=True)
    for name, help_text, func in (
        ("validate", "check a spec without building anything; exit 2 with every problem listed", validate),
        ("fill", "print (or write) the spec with every default filled in", fill),
    ):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("spec", help="a spec file, or a named spec such as 'quickstart' or a model id")
        sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=2")
        if name == "fill":
            sub.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
        sub.set_defaults(func=func)


def validate(args: argparse.Namespace) -> int:
    from prism_core.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    model = spec.model
    print(f"{args.spec}: ok — vision {model.vision.kind}, projector {model.projector.kind}, llm {model.llm.kind}, "
          f"stage {spec.train.stage}")
    return 0


def fill(args: argparse.Namespace) -> int:
    from prism_core.spec import dumps_spec, load_spec

    text = dumps_spec(load_spec(args.spec, args.overrides))
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
