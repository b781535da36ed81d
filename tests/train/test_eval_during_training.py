"""``[eval]`` tasks during training: every N steps and at the end, logged to the trackers, under DDP sharded across
ranks or on rank 0, the same answers as evaluating the exported model afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import tomli_w

from prism_core.registry import use_registry
from prism_core.spec import loads_spec
from prism_core.train.loop import train
from prism_core.train.trackers import read_metrics
from tests.train.conftest import HERE, REPO, subprocess_env
from tests.train.eval_toy import registry
from tests.train.toy_run import spec_toml

NUM_EXAMPLES = 9


@pytest.fixture
def eval_registry():
    with use_registry(registry()) as reg:
        yield reg


def _spec_text(tmp_path, run_name: str, strategy: str | None = None, **eval_fields) -> str:
    train_table = {"strategy": {"kind": strategy}} if strategy else {}
    text = spec_toml(str(tmp_path), run_name=run_name, max_steps=6, **train_table)
    table = {"tasks": [{"kind": "toy-eval", "num_examples": NUM_EXAMPLES}], "root": str(tmp_path / "data"),
             "every": 3, "batch_size": 2, **eval_fields}
    return text + "\n" + tomli_w.dumps({"eval": table})


def _predictions(run_dir, step: int) -> list[dict]:
    path = run_dir / "evaluation" / f"step-{step:06d}" / "predictions-toy-eval.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _eval_records(run_dir) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "eval/toy-eval/accuracy" in r]


def test_tasks_run_every_n_steps_and_at_the_end_logged_to_the_trackers(tmp_path, eval_registry):
    result = train(loads_spec(_spec_text(tmp_path, "single", every=2)))
    records = _eval_records(result.run_dir)
    assert [r["step"] for r in records] == [2, 4, 6]  # step 6 once: the end evaluation, not also the periodic one
    assert {"eval/toy-eval/yes_ratio", "eval/toy-eval/by_label/yes"} <= set(records[0])
    for step in (2, 4, 6):
        report = json.loads((result.run_dir / "evaluation" / f"step-{step:06d}" / "results.json").read_text())
        predictions = _predictions(result.run_dir, step)
        assert report["step"] == step and report["tasks"]["toy-eval"]["num_examples"] == NUM_EXAMPLES
        assert [p["id"] for p in predictions] == [f"q{i}" for i in range(NUM_EXAMPLES)]
        accuracy = sum(p["prediction"] == p["label"] for p in predictions) / NUM_EXAMPLES
        assert report["tasks"]["toy-eval"]["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert not (result.run_dir / "eval.json").exists()  # tasks only: no held-out split evaluation


def test_training_continues_with_the_modules_training_flags_it_had(tmp_path, eval_registry):
    from prism_core.evaluation.training import TrainingEvaluation

    seen = []
    original = TrainingEvaluation.run

    def spy(self, model, step):
        before = {name: m.training for name, m in model.named_modules()}
        out = original(self, model, step)
        seen.append(before == {name: m.training for name, m in model.named_modules()})
        return out

    TrainingEvaluation.run = spy
    try:
        train(loads_spec(_spec_text(tmp_path, "flags", every=3, at_end=False)))
    finally:
        TrainingEvaluation.run = original
    assert seen == [True, True]


def test_sharded_strategies_are_refused_before_training_with_what_to_do(tmp_path, eval_registry):
    from prism_core.evaluation.training import TrainingEvaluation

    spec = loads_spec(_spec_text(tmp_path, "fsdp-like"))
    with pytest.raises(ValueError, match=r"whole model.*prism eval"):
        TrainingEvaluation(spec, strategy=SimpleNamespace(sharded=True), run_dir=tmp_path, trackers=[])


def _torchrun(spec_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "eval_worker.py"), str(spec_path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=REPO)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("distribute", ["shard", "rank0"])
def test_ddp_evaluates_during_training_and_agrees_with_the_exported_model(tmp_path, eval_registry, distribute):
    import prism_core

    spec = tmp_path / "spec.toml"
    spec.write_text(_spec_text(tmp_path, distribute, strategy="ddp", distribute=distribute))
    out = _torchrun(spec)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / distribute
    assert [r["step"] for r in _eval_records(run_dir)] == [3, 6]
    predictions = _predictions(run_dir, 6)
    assert [p["id"] for p in predictions] == [f"q{i}" for i in range(NUM_EXAMPLES)]  # each example once, in order
    ranks = [p["rank"] for p in predictions]
    assert ranks == ([i % 2 for i in range(NUM_EXAMPLES)] if distribute == "shard" else [0] * NUM_EXAMPLES)

    again = prism_core.evaluate(run_dir / "model", [{"kind": "toy-eval", "num_examples": NUM_EXAMPLES}],
                                root=tmp_path / "data", batch_size=4, out_dir=tmp_path / "after", progress=False)
    after = [json.loads(line) for line in (tmp_path / "after" / "predictions-toy-eval.jsonl").read_text().splitlines()]
    for during, later in zip(predictions, after, strict=True):
        assert during["probabilities"] == pytest.approx(later["probabilities"], rel=1e-4, abs=1e-6)
    assert again["tasks"]["toy-eval"]["metrics"]["accuracy"] == pytest.approx(
        sum(p["prediction"] == p["label"] for p in predictions) / NUM_EXAMPLES)
