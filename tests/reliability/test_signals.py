"""SIGTERM / SIGINT: save, then exit 128 + the signal (143 / 130, what schedulers expect); the resume is exact."""

from __future__ import annotations

import pytest

from prism_core.train import checkpoint as ckpt
from prism_core.train.trackers import read_metrics
from tests.reliability.conftest import run_worker, write_spec


@pytest.mark.slow
@pytest.mark.parametrize(("variable", "code"),
                         [("PRISM_TEST_SIGTERM_AT_STEP", 143), ("PRISM_TEST_SIGINT_AT_STEP", 130)])
def test_a_signal_saves_exits_with_its_status_and_resumes_exactly(tmp_path, variable, code):
    reference = run_worker(str(write_spec(tmp_path, "ref.toml", run_name="ref", save_every=2)))
    assert reference.returncode == 0, reference.stderr
    spec = write_spec(tmp_path, run_name="stopped", save_every=2)
    stopped = run_worker(str(spec), **{variable: "3"})
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr and "prism-run --resume" in stopped.stdout
    run = tmp_path / "stopped"
    assert ckpt.latest_checkpoint(run).name == "step-00000003" and not ckpt.verify(ckpt.latest_checkpoint(run))
    resumed = run_worker("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    curve = [{k: r[k] for k in ("step", "loss", "grad_norm", "learning_rate")} for r in read_metrics(run)]
    assert curve == [{k: r[k] for k in ("step", "loss", "grad_norm", "learning_rate")}
                     for r in read_metrics(tmp_path / "ref")]
