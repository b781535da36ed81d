"""``python eval_worker.py PRISM-RUN-ARGS...`` (or under torchrun): ``prism-run`` with the toy registry plus the
``toy-eval`` evaluation task."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prism_core.registry import use_registry
from tests.train.eval_toy import registry


def main() -> int:
    from prism_core.cli.run import main as prism_run

    with use_registry(registry()):
        return prism_run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
