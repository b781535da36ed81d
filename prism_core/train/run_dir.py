"""The run directory: ``OUTPUT_DIR/RUN_NAME/`` with ``spec.toml`` (the resolved spec, every default filled in),
``plugins.json`` (each installed kind with its distribution and version), ``metrics.jsonl`` and ``checkpoints/``.

``prism-run --resume RUN_DIR`` rebuilds everything from ``spec.toml``, so the directory alone is enough to continue.
"""

from __future__ import annotations

import json
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from prism_core.registry import get_registry
from prism_core.spec import RunSpec, dumps_spec, load_spec

SPEC_FILE = "spec.toml"
PLUGINS_FILE = "plugins.json"


def default_run_name(source: str, timestamp: float) -> str:
    """``<spec name>-<YYYYmmdd-HHMMSS>``; the timestamp comes from rank 0 so every rank agrees."""
    stem = Path(source.strip("<>").removeprefix("spec ")).stem or "run"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(timestamp))}"


def run_dir_for(spec: RunSpec, source: str, timestamp: float) -> Path:
    return Path(spec.train.output_dir) / (spec.train.run_name or default_run_name(source, timestamp))


def plugin_versions() -> dict[str, Any]:
    """Distributions and versions of prism-core and of every installed kind (saved with each run)."""
    registry = get_registry()
    kinds = [
        {"role": info.role.value, "kind": info.kind, "distribution": info.distribution, "version": info.version}
        for info in registry.all_kinds()
    ]
    try:
        core = metadata.version("prism-core")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        core = "unknown"
    return {"prism-core": core, "kinds": kinds}


class RunDirError(RuntimeError):
    pass


def never_trained(run_dir: Path) -> bool:
    """A run directory whose run stopped before its first step (bad data, say): no checkpoint, no metrics."""
    metrics = run_dir / "metrics.jsonl"
    return not (run_dir / "checkpoints").exists() and not (metrics.is_file() and metrics.stat().st_size)


def create_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """Create a fresh run directory (rank 0 only); refuse one that already holds a run. One whose run never
    trained a step is reused, so the same command works again once its problem is fixed."""
    if (run_dir / SPEC_FILE).exists() and not never_trained(run_dir):
        raise RunDirError(f"{run_dir} already holds a run: continue it with `prism-run --resume {run_dir}`, "
                          f"or choose another train.run_name")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SPEC_FILE).write_text(dumps_spec(spec), encoding="utf-8")
    (run_dir / PLUGINS_FILE).write_text(json.dumps(plugin_versions(), indent=1) + "\n", encoding="utf-8")


def load_run_spec(run_dir: Path) -> RunSpec:
    """The run's spec (for ``--resume`` and ``--export``): ``RUN_DIR/spec.toml``, as the user may have edited it."""
    run_dir = Path(run_dir)
    path = run_dir / SPEC_FILE
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if not path.is_file():
        from prism_core.train.checkpoint import SPEC, step_dirs

        copies = [d / SPEC for _, d in step_dirs(run_dir) if (d / SPEC).is_file()]
        hint = (f"the newest checkpoint keeps the spec it was trained with: cp {copies[-1]} {path}" if copies
                else "restore it from wherever the run's spec came from")
        raise RunDirError(f"{path} is missing: a run directory keeps its spec there, and --resume / --export "
                          f"rebuild the run from it; {hint}")
    return load_spec(path)
