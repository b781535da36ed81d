"""2-rank torchrun runs on CPU (gloo) against one process with the same global batch.

Tolerance: DDP and FSDP sum gradients in a different order than one process (all-reduce / reduce-scatter), so
losses and grad norms agree to ``rel=1e-5`` over 6 steps in fp32, not bitwise.
"""

import socket
import subprocess
import sys

import pytest

from prism_core.spec import loads_spec
from prism_core.train import checkpoint as ckpt
from prism_core.train.loop import train
from prism_core.train.trackers import read_metrics
from tests.train.conftest import REPO, WORKER, subprocess_env
from tests.train.toy_run import spec_toml

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
TOLERANCE = 1e-5


def _torchrun(*args: str, nproc: int = 2, launcher: tuple[str, ...] = ("--standalone",), **env: str):
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "--nproc-per-node", str(nproc),
           str(WORKER), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=subprocess_env(**env), cwd=REPO)


def _single_process_reference(tmp_path, **train_overrides):
    return train(loads_spec(spec_toml(str(tmp_path), run_name="single", **train_overrides)))


def _assert_same_curve(run_dir, reference_dir):
    ours, ref = read_metrics(run_dir), read_metrics(reference_dir)
    assert [r["step"] for r in ours] == [r["step"] for r in ref]
    for a, b in zip(ours, ref, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=TOLERANCE)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["learning_rate"] == b["learning_rate"]


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path, toy_registry, kind):
    reference = _single_process_reference(tmp_path)
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), run_name=kind, strategy={"kind": kind}))
    out = _torchrun(str(spec))
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same_curve(tmp_path / kind, reference.run_dir)
    assert (tmp_path / kind / "model").is_dir()  # consolidated export from the gathered state


def test_fsdp_completes_a_mixed_image_and_text_only_epoch_and_resumes_from_shards(tmp_path, toy_registry):
    # 32 examples, 22 with an image: one epoch is 5 single-modality global batches of 8.
    overrides = {"max_steps": None, "epochs": 1, "save_every": 2, "strategy": {"kind": "fsdp"}}
    reference = _single_process_reference(tmp_path, **{**overrides, "strategy": {"kind": "single"}})
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), run_name="fsdp", **overrides))
    stopped = _torchrun(str(spec), PRISM_TEST_SIGTERM_AT_STEP="3")
    # Each rank saves and exits 143 (128 + SIGTERM); torchrun reports its workers' status as a failure of its own.
    assert stopped.returncode != 0 and "exitcode: 143" in stopped.stderr, stopped.stderr[-3000:]
    assert (ckpt.latest_checkpoint(tmp_path / "fsdp") / "dcp").is_dir()
    resumed = _torchrun("--resume", str(tmp_path / "fsdp"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert reference.step == reference.total_steps == 5  # 3 image-only and 2 text-only global batches
    _assert_same_curve(tmp_path / "fsdp", reference.run_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_torchrun_agents_rendezvous_as_two_nodes(tmp_path, toy_registry):
    reference = _single_process_reference(tmp_path)
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), run_name="nodes", strategy={"kind": "fsdp", "sharding": "hybrid"}))
    launcher = ("--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
                "--rdzv-id", "prism-test")
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "--nproc-per-node", "1", str(WORKER), str(spec)]
    agents = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=subprocess_env(), cwd=REPO) for _ in range(2)]
    outputs = [agent.communicate(timeout=90) for agent in agents]
    assert [a.returncode for a in agents] == [0, 0], "\n".join(err[-2000:] for _, err in outputs)
    _assert_same_curve(tmp_path / "nodes", reference.run_dir)
