"""The recipe end to end on the core fakes: reproducibility, the run directory, accumulation, resume."""

import json

import pytest
import torch

from prism_core.spec import loads_spec
from prism_core.train import checkpoint as ckpt
from prism_core.train.loop import train
from prism_core.train.trackers import read_metrics
from tests.train.conftest import run_worker
from tests.train.toy_run import spec_toml

CURVE = ("loss", "grad_norm", "learning_rate")


def _train(tmp_path, run_name, **overrides):
    spec = loads_spec(spec_toml(str(tmp_path), run_name=run_name, **overrides))
    return spec, train(spec)


def _curve(run_dir):
    return [{k: r[k] for k in ("step", *CURVE)} for r in read_metrics(run_dir)]


@pytest.mark.slow
def test_same_spec_and_seed_reproduce_the_loss_curve_exactly(tmp_path, toy_registry):
    _, first = _train(tmp_path, "a")
    _, second = _train(tmp_path, "b")
    assert first.step == first.total_steps == 6
    assert _curve(first.run_dir) == _curve(second.run_dir)
    losses = [r["loss"] for r in read_metrics(first.run_dir)]
    assert losses[-1] < losses[0]  # it learns


def test_run_directory_holds_spec_plugins_metrics_checkpoints_and_an_export(tmp_path, toy_registry):
    spec, result = _train(tmp_path, "dir", save_every=2, keep_last=2)
    run_dir = result.run_dir
    assert loads_spec((run_dir / "spec.toml").read_text()) == spec
    plugins = json.loads((run_dir / "plugins.json").read_text())
    assert {"role": "train_strategies", "kind": "single", "distribution": "prism-core-fakes", "version": "0"} \
        in plugins["kinds"]
    record = read_metrics(run_dir)[0]
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_s", "samples_per_s", "step_time_s"} <= set(record)
    assert [s for s, _ in ckpt.list_checkpoints(run_dir)] == [4, 6]

    from prism_core.io import load

    exported = load(result.export_dir).state_dict()
    final = _final_weights(run_dir, "projector.")
    assert final and all(torch.equal(exported[k].float(), v.float()) for k, v in final.items())


def _final_weights(run_dir, prefix):
    from safetensors.torch import load_file

    state = load_file(str(ckpt.latest_checkpoint(run_dir) / "model.safetensors"))
    return {k: v for k, v in sorted(state.items()) if k.startswith(prefix)}


def test_a_second_run_into_the_same_directory_is_refused(tmp_path, toy_registry):
    _train(tmp_path, "twice", max_steps=1)
    from prism_core.train.run_dir import RunDirError

    with pytest.raises(RunDirError, match="--resume"):
        _train(tmp_path, "twice", max_steps=1)


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_micro_batch(tmp_path, toy_registry):
    _, accumulated = _train(tmp_path, "acc", per_device_batch_size=2)  # 4 micro-batches of 2
    _, whole = _train(tmp_path, "whole", per_device_batch_size=8)
    for a, b in zip(read_metrics(accumulated.run_dir), read_metrics(whole.run_dir), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


@pytest.mark.slow
def test_activation_checkpointing_leaves_the_curve_unchanged(tmp_path, toy_registry):
    _, plain = _train(tmp_path, "plain", max_steps=3)
    _, recomputed = _train(tmp_path, "ac", max_steps=3, activation_checkpointing=True)
    for a, b in zip(read_metrics(plain.run_dir), read_metrics(recomputed.run_dir), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_align_stage_trains_only_the_projector(tmp_path, toy_registry):
    _, result = _train(tmp_path, "align", stage="align", max_steps=2, learning_rate=1e-3, weight_decay=0.0)
    optimizer_meta = json.loads((ckpt.latest_checkpoint(result.run_dir) / "optimizer.json").read_text())
    names = [n for g in optimizer_meta["param_groups"] for n in g["param_names"]]
    assert names and all(n.startswith("projector.") for n in names)


@pytest.mark.slow
def test_sigterm_saves_and_resume_continues_bitwise(tmp_path, toy_registry):
    _, reference = _train(tmp_path, "ref", save_every=2)
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(spec_toml(str(tmp_path), run_name="stopped", save_every=2))
    stopped = run_worker(str(spec_file), PRISM_TEST_SIGTERM_AT_STEP="3")
    assert stopped.returncode == 143, stopped.stderr  # 128 + SIGTERM, after saving
    run_dir = tmp_path / "stopped"
    assert "prism-run --resume" in stopped.stdout
    assert ckpt.latest_checkpoint(run_dir).name == "step-00000003"
    resumed = run_worker("--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert _curve(run_dir) == _curve(reference.run_dir)


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_the_previous_checkpoint_and_resume_matches(tmp_path, toy_registry):
    _, reference = _train(tmp_path, "ref", save_every=2)
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(spec_toml(str(tmp_path), run_name="killed", save_every=2))
    killed = run_worker(str(spec_file), PRISM_TEST_KILL_IN_SAVE_AT_STEP="4")
    assert killed.returncode == -9
    run_dir = tmp_path / "killed"
    assert (run_dir / "checkpoints" / ".tmp-step-00000004").is_dir()  # the half-written save
    assert ckpt.latest_checkpoint(run_dir).name == "step-00000002"
    resumed = run_worker("--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert _curve(run_dir) == _curve(reference.run_dir)
    assert not (run_dir / "checkpoints" / ".tmp-step-00000004").exists()
