"""``prism plot RUN_DIR [RUN_DIR ...]``: loss, learning rate, gradient norm and held-out accuracy against steps,
as a PNG, SVG or HTML page (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="draw runs' training curves (PNG, SVG or HTML), several overlaid")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run directories written by prism-run")
    parser.add_argument("-o", "--output", type=Path,
                        help="a .png, .svg or .html file (default: RUN_DIR/curves.png for one run, ./curves.png "
                             "for several)")
    parser.add_argument("--title", help="the figure's title (default: the runs' names)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prism_core.plot import PLOT_FILE, PlotError, PlotUnavailableError, plot_runs

    out = args.output or (args.run_dirs[0] / PLOT_FILE if len(args.run_dirs) == 1 else Path(PLOT_FILE))
    try:
        print(f"wrote {plot_runs(args.run_dirs, out, title=args.title)}")
    except PlotError as exc:
        print(f"prism plot: {exc}", file=sys.stderr)
        return 2
    except PlotUnavailableError as exc:
        print(f"prism plot: {exc}", file=sys.stderr)
        return 1
    return 0
