"""Damaged checkpoints: the newest one's files truncated, emptied, garbled or with flipped bytes, its metadata gone;
every checkpoint's metadata gone; a partial metrics line; a full disk. A resume names the damaged file in one line,
falls back to the newest intact checkpoint (kept damaged one aside) and ends with the same tensors as a run that was
never damaged; with nothing intact it exits 2 saying what it found."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prism_core.registry import use_registry
from prism_core.train import checkpoint as ckpt
from tests.reliability.conftest import metric_steps, prism_run
from tests.train.toy_run import registry, spec_toml

TRAIN = {"max_steps": 6, "save_every": 2, "keep_last": 3}


def _reference(factory, kind: str) -> Path:
    root = factory.mktemp(f"reference-{kind}")
    spec = root / "spec.toml"
    spec.write_text(spec_toml(str(root), run_name="run", strategy={"kind": kind}, **TRAIN))
    from prism_core.cli.run import main

    with use_registry(registry()):
        assert main([str(spec)]) == 0
    assert [s for s, _ in ckpt.list_checkpoints(root / "run")] == [2, 4, 6]
    return root / "run"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A finished unsharded run with checkpoints at steps 2, 4 and 6 (never touched)."""
    return _reference(tmp_path_factory, "single")


@pytest.fixture
def run(reference, tmp_path) -> Path:
    """A copy of the reference run to damage."""
    return Path(shutil.copytree(reference, tmp_path / "run"))


def _state(checkpoint: Path) -> dict[str, torch.Tensor]:
    if (checkpoint / "model.safetensors").is_file():
        return {**load_file(checkpoint / "model.safetensors"),
                **{f"optimizer.{k}": v for k, v in load_file(checkpoint / "optimizer.safetensors").items()}}
    from prism_core.composition import build

    model = build(ckpt_spec(checkpoint).model, load_init_weights=False)
    ckpt.load_model_weights(checkpoint, model)
    return model.state_dict()


def ckpt_spec(checkpoint: Path):
    from prism_core.spec import load_spec

    return load_spec(checkpoint / "spec.toml")


def assert_same_final_state(run: Path, reference: Path) -> None:
    ours, ref = _state(ckpt.latest_checkpoint(run)), _state(ckpt.latest_checkpoint(reference))
    assert ours.keys() == ref.keys()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    assert metric_steps(run) == list(range(1, 7))  # no step duplicated or missing


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _flip_a_tensor_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + (len(data) - 8 - header) // 2] ^= 0x40  # inside the tensor data, the header untouched
    file.write_bytes(bytes(data))


DAMAGE = {
    "weights-truncated": ("model.safetensors", _truncate, "bytes, the manifest says"),
    "weights-emptied": ("model.safetensors", lambda f: f.write_bytes(b""), "0 bytes, the manifest says"),
    "optimizer-truncated": ("optimizer.safetensors", _truncate, "bytes, the manifest says"),
    "trainer-json-garbage": ("trainer.json", lambda f: f.write_text("{" + "x" * (f.stat().st_size - 1)),
                             "contents differ from the manifest's SHA-256"),
    "flipped-tensor-byte": ("model.safetensors", _flip_a_tensor_byte, "contents differ from the manifest's SHA-256"),
    "rng-file-deleted": ("rng-rank0.safetensors", Path.unlink, "missing"),
    "meta-json-deleted": ("meta.json", Path.unlink, "missing (the checkpoint's metadata and manifest)"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(run, reference, toy_registry, capsys, case):
    name, damage, problem = DAMAGE[case]
    damaged_file = ckpt.latest_checkpoint(run) / name
    damage(damaged_file)
    resumed = prism_run(capsys, "--resume", str(run)).expect(
        0, f"warning: checkpoint step 6 is damaged ({damaged_file}: ", problem,
        "resuming from step 4, the newest intact checkpoint (the damaged one is kept as damaged-step-00000006)")
    warnings = [line for line in resumed.err.splitlines() if "is damaged" in line]
    assert len(warnings) == 1
    assert (run / "checkpoints" / "damaged-step-00000006").is_dir()
    assert_same_final_state(run, reference)


def test_flipped_bytes_are_refused_by_export_too(run, toy_registry, capsys):
    _flip_a_tensor_byte(ckpt.latest_checkpoint(run) / "model.safetensors")
    prism_run(capsys, "--export", str(run)).expect(2, "checkpoint step 6 is damaged",
                                                   "model.safetensors: contents differ")


def test_metadata_deleted_from_every_checkpoint_is_an_error_that_lists_them(run, toy_registry, capsys):
    for _, path in ckpt.step_dirs(run):
        (path / "meta.json").unlink()
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    prism_run(capsys, "--resume", str(run)).expect(
        2, f"{run}: no intact checkpoint to resume from:", "step 6: ", "step 4: ", "step 2: ",
        "meta.json: missing", "to start again from step 0")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing moved, nothing started
    assert metric_steps(run) == list(range(1, 7))


def test_a_run_without_any_checkpoint_says_it_starts_over(run, reference, toy_registry, capsys):
    shutil.rmtree(run / "checkpoints")
    prism_run(capsys, "--resume", str(run)).expect(0, "has no checkpoint yet: starting from step 0")
    assert_same_final_state(run, reference)


def test_step_picks_a_checkpoint_and_moves_the_newer_ones_aside(run, reference, toy_registry, capsys):
    prism_run(capsys, "--resume", str(run), "--step", "4").expect(
        0, "checkpoint step 6 is newer than step 4: moved aside as superseded-step-00000006")
    assert (run / "checkpoints" / "superseded-step-00000006" / "meta.json").is_file()
    assert_same_final_state(run, reference)


def test_a_damaged_or_missing_chosen_step_is_an_error(run, toy_registry, capsys):
    _truncate(run / "checkpoints" / "step-00000004" / "optimizer.safetensors")
    prism_run(capsys, "--resume", str(run), "--step", "4").expect(
        2, "checkpoint step 4 of", "is damaged:", "optimizer.safetensors: ", "Choose another with --step")
    prism_run(capsys, "--resume", str(run), "--step", "5").expect(2, "no checkpoint for step 5 (checkpoints: 2, 4, 6)")
    assert (run / "checkpoints" / "step-00000004").is_dir()  # a refused resume moves nothing


def test_a_partial_last_metrics_line_is_dropped_with_a_warning(run, toy_registry, capsys):
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 7, "loss": 4.2, "learn')
    from prism_core.train.trackers import read_metrics

    assert [r["step"] for r in read_metrics(run)] == list(range(1, 7))  # readers (prism plot) skip it too
    prism_run(capsys, "--resume", str(run)).expect(0, f"{metrics} line 7: not a complete record")
    assert metric_steps(run) == list(range(1, 7))
    prism_run(capsys, "--resume", str(run)).expect(0)  # and the next resume has nothing to say about it


@pytest.mark.parametrize("how", ["while-writing", "before-writing"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_what_it_needs(
    tmp_path, reference, toy_registry, capsys, monkeypatch, how
):
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), run_name="full", **TRAIN))
    real_save_file = ckpt.save_file

    def fill_the_disk(tensors, filename, *args, **kwargs):
        if ".tmp-step-00000004" in str(filename):
            Path(filename).write_bytes(b"\0" * 100)  # written in part, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real_save_file(tensors, filename, *args, **kwargs)

    real_usage, calls = shutil.disk_usage, []

    def little_space(path):  # the save of step 2 sees the real disk, the one of step 4 a nearly full one
        calls.append(path)
        usage = real_usage(path)
        return usage if len(calls) < 2 else type(usage)(usage.total, usage.total - 1000, 1000)

    if how == "while-writing":
        monkeypatch.setattr(ckpt, "save_file", fill_the_disk)
    else:
        monkeypatch.setattr(ckpt.shutil, "disk_usage", little_space)
    run = tmp_path / "full"
    failed = prism_run(capsys, str(spec)).expect(
        2, f"{run / 'checkpoints' / '.tmp-step-00000004'}: cannot write checkpoint step 4: no space left on device: "
           "it needs about", "free on that disk; the previous checkpoint step-00000002 is intact",
        f"prism-run --resume {run}")
    assert len([line for line in failed.err.splitlines() if "prism-run:" in line]) == 1
    assert not (run / "checkpoints" / ".tmp-step-00000004").exists()
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2] and not ckpt.verify(run / "checkpoints" / "step-00000002")
    monkeypatch.undo()
    prism_run(capsys, "--resume", str(run)).expect(0)
    assert_same_final_state(run, reference)


@pytest.fixture(scope="module")
def sharded_reference(tmp_path_factory) -> Path:
    return _reference(tmp_path_factory, "fsdp")


def test_a_damaged_dcp_shard_falls_back_too(sharded_reference, tmp_path, toy_registry, capsys):
    run = Path(shutil.copytree(sharded_reference, tmp_path / "run"))
    shard = next((ckpt.latest_checkpoint(run) / "dcp").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # a byte of tensor data, which DCP itself would read without a word
    shard.write_bytes(bytes(data))
    prism_run(capsys, "--resume", str(run)).expect(
        0, f"warning: checkpoint step 6 is damaged ({shard}: contents differ from the manifest's SHA-256")
    ours, ref = _state(ckpt.latest_checkpoint(run)), _state(ckpt.latest_checkpoint(sharded_reference))
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


def test_the_manifest_lists_every_file_with_its_size_and_sha256(reference):
    import hashlib

    latest = ckpt.latest_checkpoint(reference)
    files = json.loads((latest / "meta.json").read_text())["files"]
    on_disk = sorted(p.relative_to(latest).as_posix() for p in latest.rglob("*") if p.is_file())
    assert sorted(files) == [n for n in on_disk if n != "meta.json"]
    assert {"model.safetensors", "optimizer.safetensors", "trainer.json", "spec.toml", "rng-rank0.json"} <= set(files)
    for name, entry in files.items():
        data = (latest / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_hashing_is_shared_between_ranks_and_covers_every_file_once(world_size):
    sizes = {f"f{i}": size for i, size in enumerate([5, 100, 7, 7, 3000, 1, 64, 64, 12])}
    shares = [ckpt.hash_share(sizes, rank, world_size) for rank in range(world_size)]
    assert sorted(n for share in shares for n in share) == sorted(sizes)
    loads = [sum(sizes[n] for n in share) for share in shares]
    assert max(loads) - min(loads) <= max(sizes.values())  # largest first to the least loaded
