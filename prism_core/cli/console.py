"""Where the CLIs' warnings go: to standard error, whoever else configured logging (or nobody), with prism's own
(``prism_core.*``, ``prism_plugin_*``) prefixed ``PROG: warning:``. Other libraries' warnings print as Python's
last-resort handler would have printed them."""

from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (test runners and notebooks swap it)."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.WARNING)
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.name.startswith(("prism_core", "prism_plugin")):
                message = f"{self.prog}: {record.levelname.lower()}: {message}"
            print(message, file=sys.stderr, flush=True)
        except Exception:  # a logging failure must never end a run
            self.handleError(record)


def show_warnings(prog: str) -> None:
    """Route warnings to stderr (once per process: a later call only changes the prefix)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, _StderrHandler):
            handler.prog = prog
            return
    root.addHandler(_StderrHandler(prog))
