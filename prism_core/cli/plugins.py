"""``prism plugins``: every installed kind with its distribution, presets and load status; ``prism plugins show
KIND``: a kind's fields (type, default, help), presets and distribution. Torch-free.

Listing reads each kind's presets from the memo in ``plugin_cache`` while nothing it came from changed, so a
repeated listing does not import every plugin's spec module.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prism_core.cli import plugin_cache


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plugins", help="list installed plugins, their kinds and presets")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--no-cache", action="store_true",
                        help="import every plugin now instead of reusing what the last listing learnt")
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="plugins_action", metavar="ACTION")
    show = actions.add_parser("show", help="a kind's fields (type, default, help), presets and distribution")
    show.add_argument("kind", help="a kind, e.g. siglip or gelu-mlp")
    show.add_argument("--role", help="when several roles have a kind of that name: vision_backbones, ...")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=run_show)


# -- the listing ------------------------------------------------------------------------------------------------------
def plugin_rows(use_cache: bool = True) -> list[dict[str, Any]]:
    """One row per registered kind, then conflicting named specs, then hook-only plugins."""
    from prism_core.hooks import FAILED_HOOK_PLUGINS, get_plugin_manager
    from prism_core.registry import get_registry

    registry = get_registry()
    kinds = list(registry.all_kinds())
    memo, memo_files = plugin_cache.load() if use_cache else ({}, {})
    keys = {id(info): _memo_key(info) for info in kinds}
    registry.load_all([info for info in kinds if keys[id(info)] not in memo])
    rows, learnt = [], {}
    for info in kinds:
        key = keys[id(info)]
        if key in memo:
            presets = memo[key]["presets"]
        else:
            presets = sorted(getattr(info.spec_class, "presets", {}) or {})
            if key is not None and info.spec_class is not None:
                learnt[key] = {"presets": presets}
        error = None
        if info.conflicts:
            error = "also registered by " + ", ".join(c.distribution for c in info.conflicts)
        elif info.error is not None:
            error = f"{type(info.error).__name__}: {info.error}"
        rows.append({"distribution": info.distribution, "version": info.version, "role": info.role.value,
                     "kind": info.kind, "presets": presets, "status": "ok" if info.status == "loaded" else info.status,
                     "error": error})
    if use_cache and learnt:  # what is no longer installed is forgotten
        current = set(keys.values())
        plugin_cache.save({key: entry for key, entry in {**memo, **learnt}.items() if key in current}, memo_files)
    for named in registry.named_specs():
        if named.conflicts:
            rows.append({"distribution": named.distribution, "version": "", "role": "specs", "kind": named.name,
                         "presets": [], "status": "conflict",
                         "error": "also shipped by " + ", ".join(c.distribution for c in named.conflicts)})
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


def _memo_key(info: Any) -> str | None:
    """Installed kinds only: a kind registered in memory has no entry point to key the memo on."""
    if info.entry_point is None or info.conflicts:
        return None
    return plugin_cache.entry_key(info.role.group, info.kind, info.distribution, info.version, info.target)


def run(args: argparse.Namespace) -> int:
    rows = plugin_rows(use_cache=not args.no_cache)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no prism plugins installed (pip install prism-plugin-siglip, ...)")
        return 0
    headers = ["distribution", "version", "role", "kind", "presets", "status"]
    table = [[r["distribution"], r["version"], r["role"], r["kind"], _presets_cell(r["presets"]), r["status"]]
             for r in rows]
    _print_table(headers, table, notes=[r["error"] for r in rows])
    print("\nfields, defaults and presets of a kind: prism plugins show KIND")
    return 0


def _print_table(headers: list[str], table: list[list[str]], notes: list[str | None] | None = None) -> None:
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if notes and notes[i]:
            print(f"    ! {notes[i]}")


def _presets_cell(presets: list[str]) -> str:
    if len(presets) <= 3:
        return ", ".join(presets) or "-"
    return f"{', '.join(presets[:3])}, … ({len(presets)})"


# -- one kind -----------------------------------------------------------------------------------------------------
def kind_details(info: Any) -> dict[str, Any]:
    """What ``prism plugins show`` prints, as data: a loaded kind's fields, presets and where it comes from."""
    import attrs

    from prism_core.spec import field_help

    cls = info.spec_class
    fields = []
    for f in attrs.fields(cls):
        required = f.default is attrs.NOTHING
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = "(computed from the other fields)" if default.takes_self else default.factory()
        fields.append({"name": f.name, "type": f.type if isinstance(f.type, str) else _type_name(f.type),
                       "required": required, "default": None if required else _jsonable(default),
                       "help": field_help(f)})
    return {"role": info.role.value, "kind": info.kind, "distribution": info.distribution,
            "version": info.version, "target": info.target, "doc": (cls.__doc__ or "").strip(),
            "fields": fields, "presets": {name: _jsonable(dict(values)) for name, values in cls.presets.items()}}


def run_show(args: argparse.Namespace) -> int:
    from prism_core.registry import get_registry
    from prism_core.types import Role

    registry = get_registry()
    roles = list(Role)
    if args.role is not None:
        if args.role not in {r.value for r in Role}:
            print(f"prism plugins show: unknown role {args.role!r} (roles: {', '.join(r.value for r in Role)})",
                  file=sys.stderr)
            return 2
        roles = [Role(args.role)]
    matches = [info for role in roles for info in registry.kinds(role) if info.kind == args.kind]
    if not matches:
        print(f"prism plugins show: {_unknown_kind(registry, roles, args.kind)}", file=sys.stderr)
        return 2
    status = 0
    details = []
    for info in matches:
        try:
            registry.resolve(info.role, info.kind)
        except Exception as exc:  # conflict or failed import: say so, and go on with the other roles
            print(f"prism plugins show: {exc}", file=sys.stderr)
            status = 1
            continue
        details.append(kind_details(info))
    print(json.dumps(details, indent=2) if args.json else "\n\n".join(_format_details(d) for d in details))
    return status


def _unknown_kind(registry: Any, roles: list[Any], kind: str) -> str:
    import difflib

    installed = sorted({info.kind for role in roles for info in registry.kinds(role)})
    close = difflib.get_close_matches(kind, installed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no installed kind {kind!r} (see them all: prism plugins){hint}"


def _format_details(detail: dict[str, Any]) -> str:
    from prism_core.types import Role

    role = Role(detail["role"])
    lines = [f"{detail['kind']}: {role.label} kind from {detail['distribution']} {detail['version']} "
             f"({detail['target']})"]
    if detail["doc"]:
        lines += ["", *[f"  {line}" for line in detail["doc"].splitlines()]]
    lines += ["", "fields:"]
    table = [[f["name"], f["type"], "required" if f["required"] else _toml(f["default"]), f["help"]]
             for f in detail["fields"]]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, [*widths, 0], strict=True)).rstrip()
              for row in table]
    presets = detail["presets"]
    lines += ["", f"presets ({len(presets)}):" if presets else "presets: none"]
    for name, values in presets.items():
        lines.append(f"  {name}: " + (", ".join(f"{k} = {_toml(v)}" for k, v in values.items()) or "(defaults)"))
    use = f'use it:  [{SPEC_TABLES[role.value]}]  kind = "{detail["kind"]}"'
    lines += ["", use + (f'  preset = "{next(iter(presets))}"' if presets else "")]
    return "\n".join(lines)


#: Where a kind of each role goes in a run spec.
SPEC_TABLES = {"vision_backbones": "model.vision", "llm_backbones": "model.llm", "projectors": "model.projector",
               "prompt_formats": "model.prompt_format", "datasets": "data", "train_strategies": "train.strategy",
               "eval_tasks": "[eval.tasks]",  # an array of tables: [[eval.tasks]] (or prism eval --task KIND)
               "model_adapters": "train.adapter"}


def _type_name(annotation: Any) -> str:
    """``int`` for a class, ``tuple[int, ...]`` for a generic (an annotation that is already text is shown as is)."""
    from typing import get_args

    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    """Field defaults and preset values as JSON data (tuples as lists; specs and other objects as their text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    from prism_core.spec import to_dict

    try:
        return _jsonable(to_dict(value))
    except Exception:  # not a spec: its text is the best we can show
        return str(value)


def _toml(value: Any) -> str:
    """A value the way a spec file spells it; None (no TOML spelling) means 'unset'."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)
