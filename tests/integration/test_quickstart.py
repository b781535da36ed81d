"""A shortened quickstart, end to end, as a new user runs it: `prism-run` with no spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_prism_run_without_a_spec_trains_evaluates_and_explains(tmp_path):
    env = {**os.environ, "PRISM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    overrides = ["train.max_steps=30", "data.num_train=384", "data.num_test=48", "data.num_validation=24",
                 "train.validate_every=10", f"train.output_dir={tmp_path}", "train.run_name=qs"]
    result = subprocess.run([sys.executable, "-m", "prism_core.cli.run", *overrides], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "running the bundled 'quickstart' spec" in result.stderr
    run = tmp_path / "qs"
    assert {"spec.toml", "plugins.json", "metrics.jsonl", "eval.json", "model"} <= {p.name for p in run.iterdir()}

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert len(steps) == 30 and steps[-1]["loss"] < steps[0]["loss"]
    # The validation split (its own images, not the test split's) every 10 steps: what train.stop_when reads.
    validations = [m for m in metrics if "validation/accuracy" in m]
    assert [m["step"] for m in validations] == [10, 20, 30]
    assert {f"validation/by_type/{t}/accuracy" for t in ("colour", "shape", "presence")} <= set(validations[0])

    report = json.loads((run / "eval.json").read_text())
    assert report["split"] == "test" and report["with_image"]["num_examples"] == 48
    assert set(report["with_image"]["by_type"]) == {"colour", "shape", "presence"} == set(report["blind"]["by_type"])
    assert report["with_image"]["by_type"]["presence"]["num_examples"] == 16  # the held-out split is balanced
    assert report["blind_generation"]["num_examples"] == 48 and report["chance"]["presence"] == 0.5
    assert "held-out evaluation" in result.stdout and "overall" in result.stdout
    assert f"prism chat {run}" in result.stdout

    # `prism eval` re-runs the evaluation of the saved model on another split.
    again = subprocess.run([sys.executable, "-m", "prism_core.cli.main", "eval", str(run), "--split", "train",
                            "--max-examples", "16"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    train_report = json.loads((run / "eval-train.json").read_text())
    assert train_report["split"] == "train" and train_report["with_image"]["num_examples"] == 16
