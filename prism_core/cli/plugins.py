"""``prism plugins``: every installed kind with its distribution, presets and load status (torch-free)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plugins", help="list installed plugins, their kinds and presets")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def plugin_rows() -> list[dict[str, Any]]:
    """One row per registered kind (loading each spec class to read its presets), then hook-only plugins."""
    from prism_core.hooks import FAILED_HOOK_PLUGINS, get_plugin_manager
    from prism_core.registry import get_registry

    registry = get_registry()
    registry.load_all()
    rows = []
    for info in registry.all_kinds():
        error = None
        if info.conflicts:
            error = "also registered by " + ", ".join(c.distribution for c in info.conflicts)
        elif info.error is not None:
            error = f"{type(info.error).__name__}: {info.error}"
        rows.append({
            "distribution": info.distribution,
            "version": info.version,
            "role": info.role.value,
            "kind": info.kind,
            "presets": sorted(getattr(info.spec_class, "presets", {}) or {}),
            "status": info.status if info.status != "loaded" else "ok",
            "error": error,
        })
    manager = get_plugin_manager()
    for name, plugin in sorted(manager.list_name_plugin()):
        if plugin is not None:
            dist, _, entry = name.partition(":")
            rows.append({"distribution": dist, "version": "", "role": "hooks", "kind": entry, "presets": [],
                         "status": "ok", "error": None})
    for name, exc in sorted(FAILED_HOOK_PLUGINS.items()):
        dist, _, entry = name.partition(":")
        rows.append({"distribution": dist, "version": "", "role": "hooks", "kind": entry, "presets": [],
                     "status": "error", "error": f"{type(exc).__name__}: {exc}"})
    return rows


def run(args: argparse.Namespace) -> int:
    rows = plugin_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no prism plugins installed (pip install prism-plugin-siglip, ...)")
        return 0
    headers = ["distribution", "version", "role", "kind", "presets", "status"]
    table = [[r["distribution"], r["version"], r["role"], r["kind"], _presets_cell(r["presets"]), r["status"]]
             for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row, r in zip(table, rows, strict=True):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if r["error"]:
            print(f"    ! {r['error']}")
    return 0


def _presets_cell(presets: list[str]) -> str:
    if len(presets) <= 3:
        return ", ".join(presets) or "-"
    return f"{', '.join(presets[:3])}, … ({len(presets)})"
