"""Resuming after editing RUN_DIR/spec.toml: what may change is applied and said, the rest is refused as a spec diff
with dotted paths (exit 2, before the model is built); a deleted spec.toml says where its copy is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from prism_core.registry import use_registry
from prism_core.train import checkpoint as ckpt
from prism_core.train.optim import lr_multiplier, warmup_steps
from prism_core.train.trackers import read_metrics
from tests.reliability.conftest import metric_steps, prism_run
from tests.train.toy_run import registry, spec_toml

TRAIN = {"max_steps": 4, "save_every": 2, "warmup_ratio": 0.25}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edited")
    spec = root / "spec.toml"
    spec.write_text(spec_toml(str(root), run_name="run", **TRAIN))
    from prism_core.cli.run import main

    with use_registry(registry()):
        assert main([str(spec)]) == 0
    return root / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def edit(run: Path, old: str, new: str) -> None:
    spec = run / "spec.toml"
    text = spec.read_text()
    assert old in text, old
    spec.write_text(text.replace(old, new, 1))


def test_more_steps_and_a_new_learning_rate_are_applied_and_said(run, toy_registry, capsys):
    edit(run, "max_steps = 4", "max_steps = 8")
    edit(run, "learning_rate = 0.003", "learning_rate = 0.001")
    resumed = prism_run(capsys, "--resume", str(run)).expect(
        0, "resuming from step 4 with spec changes:",
        "train.learning_rate: 0.003 → 0.001 (applied from the resumed step)",
        "train.max_steps: 4 → 8 (the run continues to the new end; the learning-rate schedule is recomputed for it)",
        "learning rate at step 4: 0 → ")
    assert "finished 8 steps" in resumed.out
    multiplier = lr_multiplier("linear-warmup+cosine-decay", 8, warmup_steps(8, 0.25))
    logged = {r["step"]: r["learning_rate"] for r in read_metrics(run)}
    assert [logged[s] for s in range(5, 9)] == pytest.approx([0.001 * multiplier(s - 1) for s in range(5, 9)])
    assert metric_steps(run) == list(range(1, 9))
    saved = (ckpt.latest_checkpoint(run) / "spec.toml").read_text()
    assert "max_steps = 8" in saved and "learning_rate = 0.001" in saved  # the new checkpoint keeps the new spec


def test_operational_fields_change_freely(run, toy_registry, capsys):
    edit(run, "log_every = 1", "log_every = 2")
    edit(run, "keep_last = 2", "keep_last = 5")
    prism_run(capsys, "--resume", str(run)).expect(0, "train.keep_last: 2 → 5 (applied)",
                                                   "train.log_every: 1 → 2 (applied)")


REFUSED = [
    ("per_device_batch_size = 4", "per_device_batch_size = 2",
     "train.per_device_batch_size: 4 → 2 (the data order on each rank)"),
    ("global_batch_size = 8", "global_batch_size = 16", "train.global_batch_size: 8 → 16 (what each step trains on)"),
    ("seed = 7", "seed = 8", "train.seed: 7 → 8 (the data order and initialisation)"),
    ("max_length = 2048", "max_length = 64", "train.max_length: 2048 → 64 (what each row keeps)"),
    ('stage = "finetune"', 'stage = "align"', "train.stage: 'finetune' → 'align' (which parameters train)"),
    ("num_examples = 32", "num_examples = 30", "data.num_examples: 32 → 30 (what each step trains on)"),
    ('kind = "single"\ndevice = "auto"', 'kind = "ddp"',
     "train.strategy.kind: 'single' → 'ddp' (the checkpoint layout)"),
    ("max_steps = 4", "max_steps = 3", "train.max_steps: 4 → 3 (the run is already at step 4)"),
]


@pytest.mark.parametrize(("old", "new", "said"), REFUSED, ids=[r[1] for r in REFUSED])
def test_a_change_a_resume_cannot_make_is_refused_as_a_spec_diff(run, toy_registry, capsys, old, new, said):
    edit(run, old, new)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    prism_run(capsys, "--resume", str(run)).expect(
        2, f"{run / 'spec.toml'} differs from the spec checkpoint step 4 was trained with", f"  {said}",
        f"the checkpoint's own copy: {run / 'checkpoints' / 'step-00000004' / 'spec.toml'}")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert not (run / ".lock").exists()  # released on the error


def test_a_changed_model_size_is_refused_before_torch_sees_a_shape(run, toy_registry, capsys):
    edit(run, "hidden_size = 32", "hidden_size = 48")
    edit(run, "seed = 7", "seed = 9")
    result = prism_run(capsys, "--resume", str(run)).expect(
        2, "  model.llm.hidden_size: 32 → 48 (the parameters' shapes and initial weights)",
        "  train.seed: 7 → 9")  # every refused change at once
    assert "size mismatch" not in result.err


def test_a_deleted_spec_says_where_the_checkpoint_keeps_a_copy(run, toy_registry, capsys):
    (run / "spec.toml").unlink()
    copy = run / "checkpoints" / "step-00000004" / "spec.toml"
    prism_run(capsys, "--resume", str(run)).expect(2, f"{run / 'spec.toml'} is missing",
                                                   f"cp {copy} {run / 'spec.toml'}")
    shutil.copy(copy, run / "spec.toml")
    prism_run(capsys, "--resume", str(run)).expect(0)


def test_an_edit_that_breaks_the_spec_is_a_spec_error_naming_the_file(run, toy_registry, capsys):
    edit(run, "learning_rate = 0.003", "learning_rate = -1.0")
    prism_run(capsys, "--resume", str(run)).expect(2, f"{run / 'spec.toml'}: 1 problem",
                                                   "train.learning_rate: must be > 0")
