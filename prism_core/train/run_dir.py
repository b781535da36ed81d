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


def create_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """Create a fresh run directory (rank 0 only); refuse one that already holds a run."""
    if (run_dir / SPEC_FILE).exists():
        raise RunDirError(f"{run_dir} already holds a run: continue it with `prism-run --resume {run_dir}`, "
                          f"or choose another train.run_name")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SPEC_FILE).write_text(dumps_spec(spec), encoding="utf-8")
    (run_dir / PLUGINS_FILE).write_text(json.dumps(plugin_versions(), indent=1) + "\n", encoding="utf-8")


def load_run_spec(run_dir: Path) -> RunSpec:
    """The spec a run was started with (for ``--resume``)."""
    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory: {SPEC_FILE} is missing")
    return load_spec(path)
