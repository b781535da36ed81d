"""Start-up time of the light commands: ``prism plugins --json`` and ``import prism_core``, against the floor
(``python -c pass``), before and after the start-up work (the files in ``STARTUP_FILES`` at a baseline revision, the
rest of the working tree alike) side by side in one run.

Each figure is the median of ``--repeat`` fresh processes, the variants interleaved so that both see the same load:
wall time, and CPU time (the process's user + system time), which other jobs on a shared machine inflate far less.
Bytecode is cached (as in an installed package) under a temporary ``PYTHONPYCACHEPREFIX``, after one warm-up run,
which also writes the working tree's listing memo (``prism_core/cli/plugin_cache.py``; a temporary ``PRISM_CACHE``);
``--no-cache`` shows the listing without it. The plugins installed in this environment are listed in every case;
``--extra-plugins N`` adds N throwaway plugin distributions (one kind with presets each) to see how the time grows as
plugins multiply. Then where the time goes without the memo, stage by stage, in one process per variant.

    python benchmarks/startup.py                       # baseline: the start-up files at HEAD
    python benchmarks/startup.py --baseline HEAD~3 --repeat 9 --extra-plugins 0 50
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLUGINS = "import sys\nfrom prism_core.cli.main import main\nsys.exit(main({argv!r}))"
COMMANDS = {
    "python -c pass": "pass",
    "import prism_core": "import prism_core",
    "prism plugins --json": PLUGINS.format(argv=["plugins", "--json"]),
    # Without the listing memo (the baseline has none: the same command there).
    "prism plugins --json --no-cache": PLUGINS.format(argv=["plugins", "--json", "--no-cache"]),
}

#: In-process stages, each timed after the previous one (APIs both the baseline and the tree have).
STAGES = """
import time, json, io, contextlib
t = [time.perf_counter()]
import prism_core.registry as registry; t.append(time.perf_counter())
reg = registry.get_registry(); t.append(time.perf_counter())
import prism_core.spec; t.append(time.perf_counter())
reg.load_all(); t.append(time.perf_counter())
from prism_core.cli.main import build_parser
build_parser(); t.append(time.perf_counter())
from prism_core.cli.plugins import plugin_rows
rows = plugin_rows(); json.dumps(rows); t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
STAGE_NAMES = ["import registry (importlib.metadata)", "entry-point scan", "import spec (attrs, cattrs)",
               "plugin spec modules", "CLI parser + hook plugins", "rows + JSON"]

PLUGIN_MODULE = '''
from typing import ClassVar
import attrs
from prism_core.spec import ProjectorSpec, spec_field

@attrs.frozen(kw_only=True)
class Spec(ProjectorSpec):
    kind: ClassVar[str] = "bench-{i}"
    presets: ClassVar = {{"bench-{i}-small": {{"width": 4}}, "bench-{i}-large": {{"width": 64, "depth": 4}}}}
    width: int = spec_field(8, help="hidden width")
    depth: int = spec_field(2, help="layers")
    activation: str = spec_field("gelu", help="non-linearity")
'''


#: The files the start-up work changed; the baseline has them as they were at ``--baseline``.
STARTUP_FILES = ("prism_core/registry.py", "prism_core/cli/main.py", "prism_core/cli/plugins.py",
                 "prism_core/cli/plugin_cache.py")


def extract_baseline(revision: str, into: Path) -> Path:
    """The working tree's ``prism_core`` with ``STARTUP_FILES`` as they were at ``revision`` (removed where they did
    not exist), in a folder that goes first on PYTHONPATH: everything else, and the installed plugins, is the same
    in both variants, so the difference is those files' alone."""
    shutil.copytree(REPO / "prism_core", into / "prism_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in STARTUP_FILES:
        old = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{name}"], capture_output=True)
        if old.returncode == 0:
            (into / name).write_bytes(old.stdout)
        else:
            (into / name).unlink(missing_ok=True)
    return into


def make_plugins(site: Path, count: int) -> None:
    """``count`` throwaway distributions laid out as pip would, each registering one projector kind."""
    site.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        info = site / f"prism_plugin_bench{i}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: prism-plugin-bench{i}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[prism.projectors]\nbench-{i} = prism_plugin_bench{i}:Spec\n")
        (site / f"prism_plugin_bench{i}.py").write_text(PLUGIN_MODULE.format(i=i))


def run_once(code: str, env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds: the child's user + system time, stdout) of one fresh process."""
    if env.get("PRISM_BENCH_BASELINE"):
        code = code.replace(", '--no-cache'", "")
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{code!r} failed:\n{result.stderr}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu, result.stdout


def print_table(title: str, medians: dict[tuple[str, str], float], names: list[str]) -> None:
    before, after = names
    print(f"{title:<40}" + "".join(f"{name:>29}" for name in names) + f"{'after / before':>16}")
    for label in COMMANDS:
        b, a = medians[(before, label)], medians[(after, label)]
        print(f"{label:<40}{b * 1000:>26.0f} ms{a * 1000:>26.0f} ms{a / b:>16.2f}")
    b = medians[(before, "prism plugins --json")] - medians[(before, "python -c pass")]
    a = medians[(after, "prism plugins --json")] - medians[(after, "python -c pass")]
    print(f"{'plugins --json minus the floor':<40}{b * 1000:>26.0f} ms{a * 1000:>26.0f} ms{a / b:>16.2f}")


def listing_summary(output: str) -> str:
    rows = json.loads(output)
    kinds = [r for r in rows if r["role"] != "hooks"]
    presets = sum(len(r["presets"]) for r in kinds)
    return f"{len(kinds)} kinds, {presets} presets, {sum(r['status'] != 'ok' for r in rows)} bad"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision of prism_core to compare with")
    parser.add_argument("--repeat", type=int, default=5, help="processes per figure (the median is shown)")
    parser.add_argument("--extra-plugins", type=int, nargs="+", default=[0, 50],
                        help="throwaway plugin distributions to add, one scenario per value")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="prism-startup-") as tmp_name:
        tmp = Path(tmp_name)
        baseline = extract_baseline(args.baseline, tmp / "baseline")
        base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
        base_env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; median of {args.repeat} processes")
        base_env["PRISM_CACHE"] = str(tmp / "cache")
        variants = {f"before ({args.baseline} start-up)": [str(baseline)], "after (working tree)": []}
        for extra in args.extra_plugins:
            site = tmp / f"site-{extra}"
            make_plugins(site, extra)
            envs = {name: {**base_env, "PYTHONPATH": os.pathsep.join([*paths, str(site)]),
                           "PRISM_BENCH_BASELINE": "1" if paths else ""}
                    for name, paths in variants.items()}
            times: dict[tuple[str, str], list[float]] = {}
            cpu: dict[tuple[str, str], list[float]] = {}
            listing: dict[str, set[str]] = {}
            for name, env in envs.items():  # warm-up: writes the bytecode caches, checks both variants run
                where = run_once("import prism_core; print(prism_core.__file__)", env, tmp)[2].strip()
                expected = variants[name][0] if variants[name] else str(REPO)
                assert where.startswith(expected), f"{name}: imported {where}, not from {expected}"
                for label, code in COMMANDS.items():
                    out = run_once(code, env, tmp)[2]
                    if label.startswith("prism plugins"):
                        listing.setdefault(name, set()).add(listing_summary(out))
            for _ in range(args.repeat):
                for label, code in COMMANDS.items():
                    for name, env in envs.items():
                        wall, used, _ = run_once(code, env, tmp)
                        times.setdefault((name, label), []).append(wall)
                        cpu.setdefault((name, label), []).append(used)
            print(f"\n{extra} extra plugin distributions")
            names = list(envs)
            print_table("wall time", {key: statistics.median(v) for key, v in times.items()}, names)
            print_table("CPU time (user + system)", {key: statistics.median(v) for key, v in cpu.items()}, names)
            for name in envs:  # with and without the memo: the same listing
                assert len(listing[name]) == 1, f"{name}: the listings differ: {listing[name]}"
            print(f"{'listed':<40}" + "".join(f"{listing[name].pop():>29}" for name in envs))

            print("where the time goes without the memo (median per stage, in-process):")
            stages = {name: [json.loads(run_once(STAGES, env, tmp)[2]) for _ in range(args.repeat)]
                      for name, env in envs.items()}
            for i, stage in enumerate(STAGE_NAMES):
                cells = "".join(f"{statistics.median(s[i] for s in stages[name]) * 1000:>26.1f} ms" for name in envs)
                print(f"  {stage:<38}{cells}")


if __name__ == "__main__":
    main()
