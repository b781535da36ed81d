"""``python worker.py PRISM-RUN-ARGS...`` (or under torchrun): ``prism-run`` with the toy registry.

Fault injection for the resume tests, by environment variable:
- ``PRISM_TEST_SIGTERM_AT_STEP=N`` / ``PRISM_TEST_SIGINT_AT_STEP=N``: send SIGTERM / SIGINT to this process after
  optimizer step N;
- ``PRISM_TEST_KILL_IN_SAVE_AT_STEP=N``: SIGKILL this process half-way through writing checkpoint N.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prism_core.hooks import get_plugin_manager, hookimpl
from prism_core.registry import use_registry
from tests.train.toy_run import registry


class SignalAtStep:
    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    @hookimpl
    def prism_after_train_step(self, step: int, metrics: dict) -> None:
        if step == self.step:
            os.kill(os.getpid(), self.signum)


def _kill_during_save(step: int) -> None:
    from prism_core.train import checkpoint

    original = checkpoint._write_trainer_state

    def write_then_die(tmp: Path, trainer_state: dict) -> None:
        original(tmp, trainer_state)
        if trainer_state["step"] == step:  # tensors and trainer state written, not yet renamed into place
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint._write_trainer_state = write_then_die


def main() -> int:
    if "PRISM_TEST_SIGTERM_AT_STEP" in os.environ:
        get_plugin_manager().register(SignalAtStep(int(os.environ["PRISM_TEST_SIGTERM_AT_STEP"])))
    if "PRISM_TEST_SIGINT_AT_STEP" in os.environ:
        get_plugin_manager().register(SignalAtStep(int(os.environ["PRISM_TEST_SIGINT_AT_STEP"]), signal.SIGINT))
    if "PRISM_TEST_KILL_IN_SAVE_AT_STEP" in os.environ:
        _kill_during_save(int(os.environ["PRISM_TEST_KILL_IN_SAVE_AT_STEP"]))
    from prism_core.cli.run import main as prism_run

    with use_registry(registry()):
        return prism_run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
