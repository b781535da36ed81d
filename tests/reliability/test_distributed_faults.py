"""Faults on two ranks (torchrun, gloo): bad examples replaced without the ranks drifting apart, a bad example under
"error" stopping every rank at once with one message, and a damaged FSDP shard found by the ranks' shared hashing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from prism_core.train import checkpoint as ckpt
from prism_core.train.trackers import read_metrics
from tests.reliability.conftest import run_worker
from tests.reliability.test_bad_data import data_spec, write_data
from tests.train.test_distributed import _assert_same_curve, _torchrun
from tests.train.toy_run import spec_toml

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_replaced_examples_keep_two_ranks_in_step_with_one_process(tmp_path):
    annotations = write_data(tmp_path / "data")
    single = run_worker(str(data_spec(tmp_path, annotations, "skip", run_name="single", epochs=2)))
    assert single.returncode == 0, single.stderr[-3000:]
    spec = data_spec(tmp_path, annotations, "skip", run_name="ddp", epochs=2, strategy={"kind": "ddp"})
    out = _torchrun(str(spec))
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_curve(tmp_path / "ddp", tmp_path / "single")
    ours, ref = read_metrics(tmp_path / "ddp")[-1], read_metrics(tmp_path / "single")[-1]
    assert {k: v for k, v in ours.items() if k.startswith("skipped")} == \
        {k: v for k, v in ref.items() if k.startswith("skipped")}
    assert ours["skipped/bad-image/data.json"] == 4  # both ranks' skips, counted once
    assert out.stderr.count("skipped and replaced") == 2  # rank 0 says it, once an epoch


def test_a_bad_example_on_one_rank_stops_every_rank_with_one_message(tmp_path):
    annotations = write_data(tmp_path / "data", bad=(2,))
    spec = data_spec(tmp_path, annotations, "error", strategy={"kind": "ddp"})
    out = _torchrun(str(spec))  # would time out if the other rank were left waiting in a collective
    assert out.returncode != 0
    assert out.stderr.count("prism-run: data.json#2: ") == 1, out.stderr[-3000:]
    assert "BadExampleError" not in out.stderr


def test_a_damaged_shard_on_two_ranks_falls_back_to_the_intact_checkpoint(tmp_path):
    reference = tmp_path / "reference.toml"
    reference.write_text(spec_toml(str(tmp_path), run_name="single", max_steps=6, save_every=2))
    assert run_worker(str(reference)).returncode == 0
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), run_name="fsdp", max_steps=6, save_every=2, keep_last=3,
                              strategy={"kind": "fsdp"}))
    assert _torchrun(str(spec)).returncode == 0
    run = tmp_path / "fsdp"
    pristine = Path(shutil.copytree(ckpt.latest_checkpoint(run), tmp_path / "pristine-step-6"))
    shard = sorted((ckpt.latest_checkpoint(run) / "dcp").glob("__1_*.distcp"))[0]  # rank 1's shard
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    resumed = _torchrun("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warning = f"warning: checkpoint step 6 is damaged ({shard}: contents differ from the manifest's SHA-256"
    assert resumed.stderr.count(warning) == 1, resumed.stderr[-3000:]
    _assert_same_curve(run, tmp_path / "single")
    for name in ckpt.read_meta(ckpt.latest_checkpoint(run))["files"]:
        if name.startswith("dcp/") and name != "dcp/.metadata":  # the re-trained shards are the pristine ones
            assert (pristine / name).read_bytes() == (ckpt.latest_checkpoint(run) / name).read_bytes(), name
