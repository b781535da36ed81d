"""Lifecycle hooks (pluggy, project name ``prism``).

Components are found through per-role entry points (``prism_core.registry``); hooks are for reacting to events.
A plugin exposes hook implementations in a torch-free module registered under the entry-point group ``prism``:

    [project.entry-points.prism]
    my-plugin = "my_plugin.hooks"

and decorates functions there with ``prism_core.hooks.hookimpl``. The reference in ``docs/hooks.md`` is checked
against this module by a test, so the two cannot drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from prism_core.registry import HOOKS_GROUP, _installed_entry_points

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    import torch

    from prism_core.spec import RunSpec

PROJECT = "prism"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PrismHookSpecs:
    """Every hook prism calls."""

    @hookspec
    def prism_add_cli_commands(self, subparsers: argparse._SubParsersAction) -> None:
        """Add subcommands to the ``prism`` command line.

        Each added parser should set ``func=callable(args) -> int`` with ``set_defaults``; the return value is the
        exit code. Keep imports inside ``func`` so ``prism --help`` stays fast and torch-free.
        """

    @hookspec
    def prism_model_built(self, model: torch.nn.Module, spec: Any) -> None:
        """Called once a model has been composed from ``spec`` (a ``ModelSpec``), before any weights are loaded
        into it for training or inference. Useful for instrumentation or extra parameter surgery."""

    @hookspec
    def prism_before_train_step(self, step: int, batch: Any) -> None:
        """Called before each optimizer step's first micro-batch; ``step`` counts finished optimizer steps."""

    @hookspec
    def prism_after_train_step(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each optimizer step on every rank; ``metrics`` holds loss, learning rate, grad norm and
        throughput for the step that just finished (``step`` counts it)."""

    @hookspec
    def prism_checkpoint_saved(self, path: Path, step: int, spec: RunSpec) -> None:
        """Called on rank 0 after a checkpoint directory has been written completely and renamed into place."""


_manager: pluggy.PluginManager | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with installed hook plugins loaded in sorted order."""
    global _manager
    if _manager is None:
        _manager = new_plugin_manager(load_installed=True)
    return _manager


def new_plugin_manager(load_installed: bool = False) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(PrismHookSpecs)
    if load_installed:
        for ep, dist, _version in _installed_entry_points({HOOKS_GROUP}):
            try:
                pm.register(ep.load(), name=f"{dist}:{ep.name}")
            except Exception as exc:  # one broken plugin never takes the CLI down
                FAILED_HOOK_PLUGINS[f"{dist}:{ep.name}"] = exc
    return pm


#: Hook plugins that failed to load: name → error (shown by ``prism plugins``).
FAILED_HOOK_PLUGINS: dict[str, BaseException] = {}
