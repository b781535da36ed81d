"""A memo of what ``prism plugins`` learns by importing each plugin's spec module: the kind's presets.

Importing every spec module (attrs generating each spec class, cattrs, TOML) was most of the command's time, and it
grows with every plugin installed. The memo makes a repeated listing cost a directory scan and a few hundred
``stat`` calls instead. An entry is used only while nothing it came from has changed:

- the interpreter, ``sys.path`` and prism-core are the same;
- the entry point is the same: group, name, distribution, version and target;
- every non-standard-library Python file that was imported when the memo was written is unchanged (mtime and size),
  which covers editing an editable install and upgrading or removing a package a spec module imports.

Presets a spec module would read from a data file rather than Python are not covered (presets are data tables in
Python, as in every first-party plugin). Kinds that failed to load are never memoised: installing the missing
package must show at once. The memo lives in
``$PRISM_CACHE/plugins/`` (default ``~/.cache/prism/plugins/``), one file per environment; ``prism plugins
--no-cache`` ignores it. A memo that cannot be read or written is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from prism_core import __version__

#: The memo's layout version: a change of layout invalidates memos written by an older prism-core.
FORMAT = 1


def _memo_path() -> Path:
    root = Path(os.environ.get("PRISM_CACHE") or Path.home() / ".cache" / "prism")
    environment = hashlib.sha256(f"{sys.executable}\0{sys.prefix}".encode()).hexdigest()[:16]
    return root / "plugins" / f"{environment}.json"


def _header() -> dict[str, Any]:
    # sys.path decides which module a target names (a PYTHONPATH checkout shadows the installed one).
    return {"format": FORMAT, "python": sys.version, "executable": sys.executable, "prism_core": __version__,
            "path": [os.path.abspath(entry or ".") for entry in sys.path]}


def _signature(path: str) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_mtime_ns, stat.st_size]


def imported_files() -> dict[str, list[int] | None]:
    """Every Python file imported so far, outside the standard library (which changes only with the interpreter)."""
    stdlib = os.path.dirname(os.__file__) + os.sep
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        if path.startswith(stdlib) and not any(d in path for d in ("site-packages", "dist-packages")):
            continue
        files[path] = _signature(path)
    return files


def entry_key(group: str, name: str, distribution: str, version: str, target: str) -> str:
    return json.dumps([group, name, distribution, version, target])


def load() -> tuple[dict[str, Any], dict[str, Any]]:
    """(entries: entry key → what was learnt, the files they depend on), or two empty dicts when any of those files
    or the header changed."""
    try:
        memo = json.loads(_memo_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(memo, dict) or memo.get("header") != _header():
        return {}, {}
    files = memo.get("files", {})
    if any(_signature(path) != signature for path, signature in files.items()):
        return {}, {}
    return memo.get("entries", {}), files


def save(entries: dict[str, Any], files: dict[str, Any]) -> None:
    """Write the memo atomically (a concurrent ``prism plugins`` reads the old one or the new one, never half).

    ``files``: those the entries taken from the previous memo depend on (this process did not import them again);
    every file imported so far is added to them.
    """
    path = _memo_path()
    memo = {"header": _header(), "files": {**files, **imported_files()}, "entries": entries}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only home or cache: the listing still works, just slower next time
        pass
