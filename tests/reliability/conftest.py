"""Shared pieces of the reliability corpus: toy runs over the core fakes, and ways to run ``prism-run``.

Every case asserts the exit code, that no traceback was printed, that the message names the file / entry / dotted
path, and (where something could be lost) that nothing was.
"""

from __future__ import annotations

import json
from pathlib import Path

from prism_core.cli.run import main
from tests.train.conftest import run_worker, toy_registry  # noqa: F401 - fixture re-exported for this folder
from tests.train.toy_run import spec_toml

__all__ = ["Outcome", "prism_run", "run_worker", "spec_toml", "write_spec"]


class Outcome:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"

    def expect(self, code: int, *fragments: str) -> Outcome:
        """Exit ``code``, no traceback, and each fragment in stderr."""
        assert self.code == code, self
        assert "Traceback" not in self.err, self
        for fragment in fragments:
            assert fragment in self.err, f"{fragment!r} not in stderr\n{self}"
        return self


def prism_run(capsys, *argv: str) -> Outcome:
    """``prism-run ARGV`` in this process (the toy registry must be active)."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def write_spec(tmp_path: Path, name: str = "spec.toml", **train) -> Path:
    path = tmp_path / name
    path.write_text(spec_toml(str(tmp_path), **train))
    return path


def metric_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
