import importlib.util
import math

import pytest

from prism_core.train.trackers import JsonLinesTracker, TrackerUnavailableError, check_trackers, read_metrics


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
def test_a_tracker_whose_package_is_missing_says_what_to_install():
    with pytest.raises(TrackerUnavailableError, match="pip install wandb"):
        check_trackers(["wandb"])
