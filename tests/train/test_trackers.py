"""Trackers: metrics.jsonl, and real TensorBoard and W&B (offline) runs read back from the files they wrote.

The TensorBoard and W&B tests need the extras ``prism-core[tensorboard]`` / ``prism-core[wandb]``; they are skipped
without them, except in nox's ``trackers`` session (``PRISM_REQUIRE_TRACKER=tensorboard,wandb``), where a missing
package fails.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import shutil
import signal

import pytest

from prism_core.hooks import get_plugin_manager, hookimpl
from prism_core.spec import loads_spec, to_dict
from prism_core.train import checkpoint as ckpt
from prism_core.train.trackers import JsonLinesTracker, TrackerUnavailableError, check_trackers, read_metrics
from tests.train.toy_run import spec_toml

CURVE = ("loss", "learning_rate", "grad_norm")


def test_jsonl_appends_and_a_resume_drops_steps_after_the_checkpoint(tmp_path):
    tracker = JsonLinesTracker(tmp_path)
    for step in (1, 2, 3, 4):
        tracker.log({"loss": 1.0 / step, "mfu": math.nan}, step)
    tracker.close()
    resumed = JsonLinesTracker(tmp_path, resume_step=2)
    resumed.log({"loss": 0.25}, 3)
    resumed.close()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[2]["loss"] == 0.25 and records[0]["mfu"] is None  # NaN is not JSON: written as null


def test_unknown_tracker_names_the_choices():
    with pytest.raises(TrackerUnavailableError, match=r"unknown tracker 'mlfloww'.*jsonl, wandb, tensorboard"):
        check_trackers(["jsonl", "mlfloww"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_tracker_whose_package_is_missing_says_which_extra_to_install():
    with pytest.raises(TrackerUnavailableError, match=r"pip install 'prism-core\[wandb\]'"):
        check_trackers(["wandb"])


# -- real runs ----------------------------------------------------------------------------------------------------
def require(module: str):
    """The tracker's package, or a skip; where PRISM_REQUIRE_TRACKER names it, a missing package is a failure."""
    if module in os.environ.get("PRISM_REQUIRE_TRACKER", "").split(","):
        return importlib.import_module(module)
    return pytest.importorskip(module)


class SigtermAtStep:
    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def prism_after_train_step(self, step: int, metrics: dict) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop finishes the step, saves and stops


def interrupted_then_resumed(tmp_path, trackers: list[str]):
    """A 6-step run with checkpoints every 2 steps, stopped after step 4 and its checkpoint lost (as when the process
    dies while writing it), then resumed from step 2: steps 3 and 4 are logged twice."""
    from prism_core.train.loop import train

    spec = loads_spec(spec_toml(str(tmp_path), run_name="tracked", save_every=2, trackers=trackers))
    stopper = SigtermAtStep(4)
    get_plugin_manager().register(stopper)
    try:
        first = train(spec)
    finally:
        get_plugin_manager().unregister(stopper)
    assert first.interrupted and first.step == 4
    shutil.rmtree(ckpt.latest_checkpoint(first.run_dir))
    assert ckpt.latest_checkpoint(first.run_dir).name == "step-00000002"
    resumed = train(spec, resume_dir=first.run_dir)
    assert resumed.step == 6 and not resumed.interrupted
    records = read_metrics(first.run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    return spec, first.run_dir, records


def test_tensorboard_holds_every_scalar_at_every_step_once_across_a_resume(tmp_path, toy_registry):
    require("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, records = interrupted_then_resumed(tmp_path, ["jsonl", "tensorboard"])
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    logged = {key for record in records for key in record if key != "step"}
    assert logged <= set(events.Tags()["scalars"])
    for key in sorted(logged):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [1, 2, 3, 4, 5, 6], key  # the first process's 3 and 4 are purged
        for scalar, record in zip(scalars, records, strict=True):
            if record[key] is not None:  # the resumed values, as in metrics.jsonl (TensorBoard keeps float32)
                assert scalar.value == pytest.approx(record[key], rel=1e-6, abs=1e-12), (key, record["step"])

    def text(tag):
        [event] = events.Tensors(f"{tag}/text_summary")
        return event.tensor_proto.string_val[0].decode()

    assert text("spec") == "\n".join(f"    {line}" for line in (run_dir / "spec.toml").read_text().splitlines())
    assert json.loads(text("plugins")) == json.loads((run_dir / "plugins.json").read_text())


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode, its settings and caches in the test's directory: nothing leaves the machine."""
    require("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
                        "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}.items():
        monkeypatch.setenv(name, value)


def test_wandb_offline_run_holds_every_scalar_and_the_config_and_a_resume_continues_it(tmp_path, toy_registry,
                                                                                       wandb_offline):
    from tests.train.wandb_offline import offline_runs

    spec, run_dir, records = interrupted_then_resumed(tmp_path, ["jsonl", "wandb"])
    first, second = offline_runs(run_dir)
    state = json.loads((run_dir / "wandb" / "prism-run.json").read_text())
    assert first.run_id == second.run_id == state["id"] and state["last_step"] == 6  # one W&B run, continued

    # The resumed process sends only the steps the W&B run does not hold yet: each step once, in order.
    assert [row["_step"] for row in first.history] == [1, 2, 3, 4]
    assert [row["_step"] for row in second.history] == [5, 6]
    rows = first.history + second.history
    for row, record in zip(rows, records, strict=True):
        logged = {k: v for k, v in record.items() if k != "step" and v is not None}
        assert logged.keys() <= row.keys()
        for key in CURVE:  # steps 3 and 4 recomputed after the resume are bitwise the first process's
            assert row[key] == record[key], (key, record["step"])

    for run in (first, second):
        assert run.config["spec"] == to_dict(spec)
        assert run.config["plugins"] == json.loads((run_dir / "plugins.json").read_text())


def test_wandb_joins_a_second_log_of_a_step_to_its_row(tmp_path, wandb_offline):
    """Evaluation during training logs its metrics at the step the training metrics were just logged at."""
    from prism_core.train.trackers import WandbTracker
    from tests.train.wandb_offline import offline_runs

    tracker = WandbTracker(tmp_path, "evaluated", {"spec": {}, "plugins": {}}, resume_step=None)
    tracker.log({"loss": 1.0}, 1)
    tracker.log({"eval/pope/accuracy": 0.5}, 1)
    tracker.log({"loss": 0.5}, 2)
    tracker.close()
    [run] = offline_runs(tmp_path)
    rows = {row["_step"]: row for row in run.history}
    assert rows[1]["loss"] == 1.0 and rows[1]["eval/pope/accuracy"] == 0.5 and rows[2]["loss"] == 0.5
