"""The quickstart's bar over a grid of seeds and thread counts: each run as a new user meets it, one after another.

Every run is ``prism-run quickstart`` in a fresh process with an empty shapes cache (so data generation is timed
too), with ``model.seed``, ``train.seed`` and ``data.seed`` all set to the run's seed (model init, data order and the
generated images change together) and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to its thread count. Per run:
wall time of the whole command, the peak summed RSS of its process tree (sampled every 0.1 s; pages a worker shares
with its parent are counted twice, so this is an upper bound), the step it stopped at, the held-out accuracy per
question type and overall, and the blind control (image zeroed, choosing among each type's answers) per type.

The bar (issue 13), checked at the end: every run >= 95% overall and >= 90% for every type; the blind control
within 5 points of chance for every type in every run; the median wall time of the 2-thread runs <= 300 s; peak
memory <= 2 GiB. Wall time needs a quiet machine: the load average is printed before and after.

    python benchmarks/quickstart_seeds.py                          # 3 seeds × 1 and 2 threads
    python benchmarks/quickstart_seeds.py --seeds 5 --threads 1 train.max_steps=2000   # overrides go to prism-run

Exit status 0 when every row and the timing meet the bar, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BAR_OVERALL, BAR_TYPE, BAR_BLIND, BAR_MEDIAN_S, BAR_PEAK_GIB = 0.95, 0.90, 0.05, 300.0, 2.0


def _tree_rss(root: int) -> int:
    """Summed RSS in bytes of ``root`` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total


def run_one(seed: int, threads: int, out: Path, overrides: list[str]) -> dict:
    name = f"qs-seed{seed}-t{threads}"
    cache = Path(tempfile.mkdtemp(prefix="prism-qs-cache-"))
    env = {**os.environ, "PRISM_CACHE": str(cache), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "prism_core.cli.run", "quickstart", f"model.seed={seed}", f"train.seed={seed}",
               f"data.seed={seed}", f"train.output_dir={out}", f"train.run_name={name}", *overrides]
    log = out / f"{name}.log"
    peak = 0
    started = time.perf_counter()
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.1):
                peak = max(peak, _tree_rss(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    subprocess.run(["rm", "-rf", str(cache)], check=False)
    row = {"seed": seed, "threads": threads, "wall_s": wall, "peak_gib": peak / 2**30, "rc": code, "log": str(log)}
    run_dir = out / name
    if code != 0 or not (run_dir / "eval.json").is_file():
        return row
    report = json.loads((run_dir / "eval.json").read_text())
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    row["steps"] = max((m.get("step", 0) for m in steps if "loss" in m), default=0)
    row["overall"] = report["with_image"]["accuracy"]
    row["by_type"] = {t: f["accuracy"] for t, f in report["with_image"]["by_type"].items()}
    row["blind"] = {t: f["accuracy"] for t, f in report["blind"]["by_type"].items()}
    row["chance"] = report["chance"]
    return row


def verdict(row: dict) -> list[str]:
    """What this run misses of the bar (empty: it meets it)."""
    if row["rc"] != 0 or "overall" not in row:
        return [f"failed (exit {row['rc']}, see {row['log']})"]
    misses = []
    if row["overall"] < BAR_OVERALL:
        misses.append(f"overall {row['overall']:.1%} < {BAR_OVERALL:.0%}")
    misses += [f"{t} {a:.1%} < {BAR_TYPE:.0%}" for t, a in row["by_type"].items() if a < BAR_TYPE]
    misses += [f"blind {t} {a:.1%} vs chance {row['chance'][t]:.1%}" for t, a in row["blind"].items()
               if abs(a - row["chance"][t]) > BAR_BLIND]
    if row["peak_gib"] > BAR_PEAK_GIB:
        misses.append(f"peak {row['peak_gib']:.2f} GiB > {BAR_PEAK_GIB} GiB")
    return misses


def format_row(row: dict, types: list[str]) -> str:
    cells = [f"{row['seed']:>4}", f"{row['threads']:>7}", f"{row['wall_s']:>7.1f}", f"{row['peak_gib']:>8.2f}"]
    if "overall" in row:
        cells += [f"{row['steps']:>5}"] + [f"{row['by_type'].get(t, float('nan')):>9.1%}" for t in types]
        cells += [f"{row['overall']:>8.1%}", "  " + " ".join(f"{row['blind'][t]:.0%}" for t in types)]
    misses = verdict(row)
    return " ".join(cells) + ("   ok" if not misses else "   MISS: " + "; ".join(misses))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, help="where the runs go (default: a new temporary directory)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides passed to every prism-run")
    args = parser.parse_args()
    out = (args.out or Path(tempfile.mkdtemp(prefix="prism-qs-seeds-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    types = ["colour", "shape", "presence"]
    print(f"runs in {out}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    header = (f"{'seed':>4} {'threads':>7} {'wall_s':>7} {'peak_GiB':>8} {'steps':>5} "
              + " ".join(f"{t:>9}" for t in types) + f" {'overall':>8}  blind ({'/'.join(types)})")
    print(header, flush=True)
    rows = []
    for seed in args.seeds:
        for threads in args.threads:
            row = run_one(seed, threads, out, args.overrides)
            rows.append(row)
            print(format_row(row, types), flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    (out / "grid.json").write_text(json.dumps(rows, indent=1))
    failed = [r for r in rows if verdict(r)]
    two = [r["wall_s"] for r in rows if r["threads"] == 2]
    median = statistics.median(two) if two else None
    print(f"runs meeting the accuracy/blind/memory bar: {len(rows) - len(failed)} of {len(rows)}")
    if median is not None:
        print(f"median wall time of the 2-thread runs: {median:.1f} s (bar {BAR_MEDIAN_S:.0f} s)")
    ok = not failed and (median is None or median <= BAR_MEDIAN_S)
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
