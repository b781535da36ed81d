"""A run directory is something people hand each other: no file planted in one may run code when the run is
exported, resumed (single, DDP or FSDP) or loaded. Each payload here is live — plain ``pickle.loads`` of it
writes its marker file, which the first test proves — and each path must leave the marker unwritten."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest

from prism_core.cli.run import main
from prism_core.train import checkpoint as ckpt
from prism_core.train import safe_dcp
from tests.train.toy_run import spec_toml


class Payload:
    """Unpickling this writes ``marker``: what an attacker's file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def payload_bytes(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def test_the_payload_is_live(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(payload_bytes(marker))
    assert marker.read_text() == "ran"


def forge_manifest(checkpoint: Path) -> None:
    """Rewrite ``meta.json``'s manifest to match the files as they now are: what an attacker who plants a file can do
    too (a SHA-256 list is not a signature), so the reading itself must stay safe."""
    meta = json.loads((checkpoint / "meta.json").read_text())
    for name in meta["files"]:
        data = (checkpoint / name).read_bytes()
        meta["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / "meta.json").write_text(json.dumps(meta))


def _train(tmp_path: Path, strategy: str, capsys) -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), run_name=strategy, max_steps=2, strategy={"kind": strategy}))
    assert main([str(spec)]) == 0
    capsys.readouterr()
    return tmp_path / strategy


def _assert_refused(code: int, capsys, marker: Path, *names: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert not marker.exists(), "the planted payload ran"
    assert "Traceback" not in err
    for name in names:
        assert name in err, err


@pytest.mark.parametrize("strategy", ["single", "ddp"])
def test_an_unsharded_checkpoint_never_reads_a_planted_dcp_folder(tmp_path, toy_registry, capsys, strategy):
    run = _train(tmp_path, strategy, capsys)
    marker = tmp_path / "ran"
    latest = ckpt.latest_checkpoint(run)
    (latest / "dcp").mkdir()
    (latest / "dcp" / ".metadata").write_bytes(payload_bytes(marker))
    (latest / "dcp" / "__0_0.distcp").write_bytes(payload_bytes(marker))
    assert main(["--export", str(run)]) == 0
    assert main(["--resume", str(run)]) == 0  # already at max_steps: loads the checkpoint, saves nothing new
    assert not marker.exists()


@pytest.fixture
def fsdp_run(tmp_path, toy_registry, capsys) -> Path:
    """A finished one-process FSDP run: its checkpoints are DCP shards (``dcp/.metadata`` + ``*.distcp``)."""
    run = _train(tmp_path, "fsdp", capsys)
    assert (ckpt.latest_checkpoint(run) / "dcp" / ".metadata").is_file()
    return run


def test_export_and_resume_refuse_a_planted_dcp_metadata(fsdp_run, tmp_path, capsys):
    marker = tmp_path / "ran"
    metadata = ckpt.latest_checkpoint(fsdp_run) / "dcp" / ".metadata"
    metadata.write_bytes(payload_bytes(marker))
    _assert_refused(main(["--export", str(fsdp_run)]), capsys, marker, str(metadata), "the manifest says")
    forge_manifest(metadata.parent.parent)
    _assert_refused(main(["--export", str(fsdp_run)]), capsys, marker, str(metadata), "builtins.exec")
    _assert_refused(main(["--resume", str(fsdp_run)]), capsys, marker, str(metadata), "nothing in it was run")


def _byte_entries(dcp_dir: Path) -> list[tuple[str, int, int, str]]:
    """(entry, offset, length, file) of each non-tensor entry DCP stored as a pickle."""
    metadata = safe_dcp.load_metadata(dcp_dir / ".metadata")
    out = []
    for index, info in metadata.storage_data.items():
        if type(metadata.state_dict_metadata[index.fqn]).__name__ == "BytesStorageMetadata":
            out.append((index.fqn, info.offset, info.length, info.relative_path))
    return out


def test_resume_refuses_a_payload_planted_in_a_non_tensor_entry(fsdp_run, tmp_path, capsys):
    marker = tmp_path / "ran"
    dcp_dir = ckpt.latest_checkpoint(fsdp_run) / "dcp"
    entries = _byte_entries(dcp_dir)
    assert any(fqn.startswith("optimizer.param_groups") for fqn, *_ in entries)
    payload = payload_bytes(marker)
    for fqn, offset, length, relative in entries:  # overwrite every stored value in place
        assert len(payload) <= length or pytest.skip(f"{fqn}: slot of {length} bytes is too small")
        data = bytearray((dcp_dir / relative).read_bytes())
        data[offset:offset + length] = payload.ljust(length, b"\0")
        (dcp_dir / relative).write_bytes(bytes(data))
    forge_manifest(dcp_dir.parent)
    _assert_refused(main(["--resume", str(fsdp_run)]), capsys, marker, str(dcp_dir), "nothing in it was run")


def test_safe_reading_still_restores_an_intact_sharded_checkpoint(fsdp_run, capsys):
    # Resume loads model, optimizer (its non-tensor hyperparameters included) and the schedule from DCP shards.
    spec = fsdp_run / "spec.toml"
    spec.write_text(spec.read_text().replace("max_steps = 2", "max_steps = 3"))
    assert main(["--resume", str(fsdp_run)]) == 0
    assert [step for step, _ in ckpt.list_checkpoints(fsdp_run)][-1] == 3


def test_loading_a_run_reads_its_safetensors_and_nothing_planted_beside_them(fsdp_run, tmp_path):
    from prism_core.io import load

    marker = tmp_path / "ran"
    for planted in (fsdp_run / "model" / "pytorch_model.bin", fsdp_run / "checkpoints" / "model.pt",
                    ckpt.latest_checkpoint(fsdp_run) / "dcp" / ".metadata"):
        planted.write_bytes(payload_bytes(marker))
    model = load(fsdp_run)
    assert model.projector is not None and not marker.exists()


def test_a_metadata_file_of_another_shape_is_refused_by_name(tmp_path):
    path = tmp_path / ".metadata"
    path.write_bytes(pickle.dumps({"not": "metadata"}))
    with pytest.raises(ckpt.CheckpointError, match=r"holds a dict, not checkpoint metadata"):
        safe_dcp.load_metadata(path)
    path.write_bytes(b"\x80\x05garbage")
    with pytest.raises(ckpt.CheckpointError, match=str(path)):
        safe_dcp.load_metadata(path)


def test_sharded_flag_in_meta_json_decides_what_is_read(fsdp_run, tmp_path, capsys):
    # An FSDP checkpoint relabelled as unsharded has no model.safetensors: a clear error, no fallback to dcp/.
    latest = ckpt.latest_checkpoint(fsdp_run)
    meta = latest / "meta.json"
    meta.write_text(meta.read_text().replace('"sharded": true', '"sharded": false'))
    shutil.rmtree(fsdp_run / "model")
    code = main(["--export", str(fsdp_run)])
    err = capsys.readouterr().err
    assert code != 0 and "model.safetensors" in err


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_resume_on_two_ranks_runs_nothing_planted(tmp_path, toy_registry, kind):
    from tests.train.test_distributed import _torchrun

    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), run_name=kind, max_steps=2, strategy={"kind": kind}))
    assert _torchrun(str(spec)).returncode == 0
    marker = tmp_path / "ran"
    dcp_dir = ckpt.latest_checkpoint(tmp_path / kind) / "dcp"
    dcp_dir.mkdir(exist_ok=True)
    (dcp_dir / ".metadata").write_bytes(payload_bytes(marker))
    forge_manifest(dcp_dir.parent)
    resumed = _torchrun("--resume", str(tmp_path / kind))
    assert not marker.exists(), "the planted payload ran"
    if kind == "ddp":  # unsharded: dcp/ is never read
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    else:
        assert resumed.returncode != 0 and "refused to load builtins.exec" in resumed.stderr
