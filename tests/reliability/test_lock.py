"""One writer per run directory: a second prism-run into a run in use is refused (exit 2, naming the holder); the
lock goes with its holder on any exit, SIGKILL included, and a stale one is taken over."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prism_core.train import lock as run_lock
from prism_core.train.lock import RunLock, RunLockedError
from tests.reliability.conftest import metric_steps, prism_run, run_worker, write_spec
from tests.train.conftest import REPO, subprocess_env

HOLD = ("import sys, time\nfrom prism_core.train.lock import RunLock\nRunLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\ntime.sleep(120)\n")


@pytest.fixture
def finished(tmp_path, toy_registry, capsys) -> Path:
    spec = write_spec(tmp_path, max_steps=2, save_every=1)
    prism_run(capsys, str(spec)).expect(0)
    assert not (tmp_path / "toy" / ".lock").exists()  # released when the run ends
    return tmp_path / "toy"


def _holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                            env=subprocess_env(), cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_the_lock_goes_with_a_killed_holder(finished):
    (finished / "spec.toml").write_text((finished / "spec.toml").read_text().replace("max_steps = 2", "max_steps = 3"))
    holder = _holder(finished)
    try:
        refused = run_worker("--resume", str(finished))
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert f"{finished} is in use: another prism-run (pid {holder.pid} on host {socket.gethostname()}" \
            in refused.stderr
        assert metric_steps(finished) == [1, 2]  # the refused run trained nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((finished / ".lock").read_text())["pid"] == holder.pid  # left behind by the SIGKILL...
    resumed = run_worker("--resume", str(finished))  # ...and taken over: its holder is gone
    assert resumed.returncode == 0, resumed.stderr
    assert metric_steps(finished) == [1, 2, 3] and not (finished / ".lock").exists()


def test_a_new_run_into_a_directory_in_use_is_refused_too(tmp_path, toy_registry, capsys):
    spec = write_spec(tmp_path, max_steps=1)
    with RunLock(tmp_path / "toy"):
        prism_run(capsys, str(spec)).expect(2, f"{tmp_path / 'toy'} is in use: another prism-run (pid {os.getpid()}")
    assert not (tmp_path / "toy" / "spec.toml").exists()


def test_two_resumes_at_once_train_once(finished):
    (finished / "spec.toml").write_text((finished / "spec.toml").read_text().replace("max_steps = 2", "max_steps = 6"))
    cmd = [sys.executable, str(REPO / "tests" / "train" / "worker.py"), "--resume", str(finished)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                              cwd=REPO) for _ in range(2)]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    # One trains; the other is refused, or (if it started after the first finished) finds the run done.
    assert codes in ([0, 2], [0, 0]), results
    for code, err in results:
        assert "Traceback" not in err, err
        if code == 2:
            assert "is in use: another prism-run" in err
    assert metric_steps(finished) == [1, 2, 3, 4, 5, 6]


def _no_flock(monkeypatch):
    import fcntl

    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)


def test_without_flock_a_live_holder_refuses_and_a_dead_one_is_stale(tmp_path, monkeypatch):
    _no_flock(monkeypatch)
    lock_file = tmp_path / ".lock"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_file.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "since": "then"}))
        with pytest.raises(RunLockedError, match=rf"pid {live.pid} on host {socket.gethostname()} \(since then\)"):
            RunLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()
    lock = RunLock(tmp_path)
    lock.acquire()  # the recorded pid is gone: stale, taken over
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_file.exists()
    lock_file.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then"}))
    with pytest.raises(RunLockedError, match=rf"host cannot be checked from here: if it is gone, delete {lock_file}"):
        RunLock(tmp_path).acquire()


def test_a_forked_worker_does_not_keep_the_lock(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    ready, started = os.pipe()
    pid = os.fork()
    if pid == 0:  # a DataLoader worker would be here; it outlives its parent by a few seconds after a SIGKILL
        os.write(started, b"1")  # the fork hooks have run: the child's copy of the lock is already closed
        time.sleep(5)
        os._exit(0)
    assert os.read(ready, 1) == b"1"
    try:
        lock._fd, fd = None, lock._fd
        run_lock._HELD.discard(fd)
        os.close(fd)  # the holder is gone (as if killed); the child still runs
        other = RunLock(tmp_path)
        other.acquire()  # not blocked by the child's copy
        other.release()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
