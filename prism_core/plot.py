"""Training curves of one or more runs, several overlaid (``prism plot RUN_DIR [RUN_DIR ...]``): loss, learning rate
and gradient norm against steps, and evaluation: benchmark tasks evaluated during training (their headline metric,
``eval/TASK/METRIC`` in ``metrics.jsonl``), the validation accuracy overall and per question type
(``[train] validate_every``) and the held-out accuracy of ``eval*.json`` at the final step.

Reads ``metrics.jsonl``, ``eval*.json`` and ``evaluation/*/results.json`` (which metric is a task's headline) of each
run directory; writes a PNG, an SVG, or an HTML page (the SVG and a table of each run's final figures). Needs
matplotlib, the ``plot`` extra: ``pip install 'prism-core[plot]'``. Torch-free.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism_core.train.trackers import METRICS_FILE, read_metrics

PLOT_FILE = "curves.png"  # what the quickstart (and `prism plot RUN_DIR`) writes into the run directory
INSTALL_HINT = "pip install 'prism-core[plot]'"

#: (metric in metrics.jsonl, panel title, log scale when the values span this factor or more, smooth long curves)
PANELS = (("loss", "training loss", 20.0, True), ("learning_rate", "learning rate", math.inf, False),
          ("grad_norm", "gradient norm (before clipping)", 20.0, True))
FORMATS = (".png", ".svg", ".html")


class PlotError(ValueError):
    """A run directory that cannot be plotted, or an output format that is not offered: the message says which."""


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


@dataclass
class RunCurves:
    run_dir: Path
    label: str = ""
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)  # metric → (steps, values)
    last_step: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # {"split", "accuracy", "blind", "n"}
    benchmarks: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)  # "task/metric" → curve


def read_run(run_dir: str | Path) -> RunCurves:
    """The curves of one run directory (steps whose value was not finite, written as null, are left out)."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise PlotError(f"{run_dir / METRICS_FILE}: no such file (is {run_dir} a run directory written by prism-run?)")
    try:
        records = read_metrics(run_dir)
    except ValueError as exc:
        raise PlotError(f"{run_dir / METRICS_FILE}: not JSON lines: {exc}") from None
    curves = RunCurves(run_dir, label=run_dir.name)
    for metric, *_ in PANELS:
        points = [(r["step"], r[metric]) for r in records if isinstance(r.get(metric), (int, float))]
        curves.series[metric] = ([s for s, _ in points], [float(v) for _, v in points])
    curves.last_step = max((r.get("step", 0) for r in records), default=0)
    headlines = _headlines(run_dir)
    for key in sorted({k for r in records for k in r if k.startswith("eval/") and k.count("/") == 2}):
        task, metric = key.split("/")[1:]
        if headlines and headlines.get(task) != metric:  # a task's other metrics would crowd the panel
            continue
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        curves.benchmarks[f"{task}/{metric}"] = ([s for s, _ in points], [float(v) for _, v in points])
    for key in sorted({k for r in records for k in r if k.startswith("validation/") and k.endswith("/accuracy")}):
        # [train] validate_every: "validation" overall and "validation/TYPE" per question type
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        name = key.replace("/by_type", "").removesuffix("/accuracy")
        curves.benchmarks[name] = ([s for s, _ in points], [float(v) for _, v in points])
    for path in sorted(run_dir.glob("eval*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            curves.evaluations.append({"split": report.get("split", path.stem), "file": path.name,
                                       "accuracy": report["with_image"]["accuracy"],
                                       "blind": report.get("blind", {}).get("accuracy"),
                                       "n": report["with_image"]["num_examples"]})
        except (ValueError, KeyError, TypeError) as exc:
            raise PlotError(f"{path}: not an evaluation report ({type(exc).__name__}: {exc})") from None
    return curves


def _headlines(run_dir: Path) -> dict[str, str]:
    """task → its headline metric, from the run's benchmark reports (``prism eval``, ``[eval]`` during training)."""
    headlines: dict[str, str] = {}
    for path in sorted(run_dir.glob("evaluation/*/results.json")):
        try:
            tasks = json.loads(path.read_text(encoding="utf-8")).get("tasks", {})
            headlines.update({name: task["headline"] for name, task in tasks.items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PlotError(f"{path}: not a benchmark report ({type(exc).__name__}: {exc})") from None
    return headlines


def _labels(runs: list[RunCurves]) -> None:
    """Run directory names, or their paths where two runs share a name."""
    names = [r.run_dir.name for r in runs]
    for run in runs:
        run.label = run.run_dir.name if names.count(run.run_dir.name) == 1 else str(run.run_dir)


def _figure(runs: list[RunCurves], title: str | None) -> Any:
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no display backend
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise PlotUnavailableError(f"prism plot needs matplotlib: {INSTALL_HINT}") from None

    figure = Figure(figsize=(11, 7.5), dpi=100, layout="constrained")
    axes = figure.subplots(2, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (metric, panel_title, log_span, smooth) in zip(axes.flat, PANELS, strict=False):
        values = [v for run in runs for v in run.series[metric][1]]
        for run, colour in zip(runs, colours, strict=True):
            steps, ys = run.series[metric]
            smoothed = _moving_average(ys) if smooth else None
            if smoothed is None:
                ax.plot(steps, ys, color=colour, linewidth=1.2, label=run.label)
            else:  # every step, faint, under its moving average
                ax.plot(steps, ys, color=colour, linewidth=0.6, alpha=0.25)
                ax.plot(steps, smoothed, color=colour, linewidth=1.4, label=run.label)
        if values and min(values) > 0 and max(values) / min(values) >= log_span:
            ax.set_yscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if not values:
            ax.text(0.5, 0.5, f"no {metric} in {METRICS_FILE}", ha="center", va="center", transform=ax.transAxes)
    ax = axes.flat[3]
    ax.set_title("evaluation")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    markers = "os^Dv<>p"
    splits = sorted({e["split"] for run in runs for e in run.evaluations})
    names = sorted({name for run in runs for name in run.benchmarks})
    styles = ["-", "--", ":", "-."]
    for run, colour in zip(runs, colours, strict=True):
        for name, (steps, ys) in sorted(run.benchmarks.items()):
            ax.plot(steps, ys, color=colour, linestyle=styles[names.index(name) % len(styles)], marker=".",
                    linewidth=1.2, label=f"{run.label} {name}")
        for e in run.evaluations:
            marker = markers[splits.index(e["split"]) % len(markers)]
            points = [(e["accuracy"], colour, "with the image")]
            if e["blind"] is not None:  # hollow: the same questions with the image zeroed
                points.append((e["blind"], "none", "blind"))
            for value, face, what in points:
                ax.plot([run.last_step], [value], marker=marker, color=colour, markerfacecolor=face,
                        linestyle="none", markersize=8, label=f"{run.label} {e['split']}, {what}")
                ax.annotate(f"{value:.1%}", (run.last_step, value), textcoords="offset points", xytext=(-8, 0),
                            ha="right", va="center", fontsize="small", color=colour)
    if splits or names:
        ax.legend(fontsize="small", loc="lower right")
        ax.set_xlim(0, max(max(r.last_step for r in runs) * 1.05, 1))
    else:
        ax.text(0.5, 0.5, "no evaluation in these runs", ha="center", va="center", transform=ax.transAxes)
    axes.flat[0].legend(fontsize="small", loc="upper right")
    figure.suptitle(title or ", ".join(r.label for r in runs))
    return figure


def _moving_average(values: list[float]) -> list[float] | None:
    """A centred moving average over about a fiftieth of the run, for curves too long to read step by step."""
    window = len(values) // 50
    if window < 3:
        return None
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    half = window // 2
    return [(prefix[min(len(values), i + half + 1)] - prefix[max(0, i - half)]) /
            (min(len(values), i + half + 1) - max(0, i - half)) for i in range(len(values))]


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, *, title: str | None = None) -> Path:
    """Draw the runs' curves into ``out`` (``.png``, ``.svg`` or ``.html``); returns ``out``."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise PlotError(f"{out}: choose a .png, .svg or .html file")
    if not run_dirs:
        raise PlotError("no run directory given")
    runs = [read_run(d) for d in run_dirs]
    _labels(runs)
    figure = _figure(runs, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() == ".html":
        svg = io.StringIO()
        figure.savefig(svg, format="svg")
        tmp.write_text(_html_page(runs, svg.getvalue(), title), encoding="utf-8")
    else:
        figure.savefig(tmp, format=out.suffix.lower()[1:])
    tmp.replace(out)  # a reader never sees half an image
    return out


def _html_page(runs: list[RunCurves], svg: str, title: str | None) -> str:
    heading = html.escape(title or ", ".join(r.label for r in runs))
    rows = []
    for run in runs:
        loss = run.series["loss"][1]
        evaluations = "; ".join(f"{e['split']}: {e['accuracy']:.1%}" + (f" (blind {e['blind']:.1%})"
                                if e["blind"] is not None else "") for e in run.evaluations) or "—"
        cells = [run.label, str(run.last_step), f"{loss[-1]:.4g}" if loss else "—", evaluations]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                    + f"<td><code>{html.escape(str(run.run_dir))}</code></td></tr>")
    svg_body = svg[svg.index("<svg"):]  # drop the XML prologue: the SVG is inlined in HTML
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{heading}</title>\n"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style></head><body>\n"
            f"<h1>{heading}</h1>\n{svg_body}\n<table><tr><th>run</th><th>steps</th><th>final loss</th>"
            f"<th>held-out accuracy</th><th>directory</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>\n")


def plot_into_run_dir(run_dir: str | Path) -> str:
    """Draw a finished run's curves into ``RUN_DIR/curves.png``; the line to print (where it is, or, without
    matplotlib, how to get it)."""
    run_dir = Path(run_dir)
    try:
        return f"curves: {plot_runs([run_dir], run_dir / PLOT_FILE)}"
    except PlotUnavailableError:
        return f"to see the curves: {INSTALL_HINT}, then prism plot {run_dir}"
