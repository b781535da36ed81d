"""One writer per run directory: ``RUN_DIR/.lock``, held by rank 0 of the run that trains into it.

Two runs resuming the same directory at once would both train into it (duplicated metrics, one crashing at a save):
the second is refused with who holds the lock. The lock is an ``flock`` on the file, which the kernel releases on
any exit (a SIGKILL included); the file records the holder's pid, host and start time, for the message and for
file systems without working ``flock``, where a lock whose pid is gone from this host is taken over as stale. A
lock held from another host on such a file system cannot be checked: the message says how to clear it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"

#: Lock descriptors held by this process. A forked child (a DataLoader worker) closes its copies at once, so the lock
#: goes with the holder, not with orphaned workers that outlive a SIGKILL by a few seconds.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLockedError(RuntimeError):
    """Another process is training into this run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since', '?')})"


class RunLock:
    """``acquire()`` or ``RunLockedError``; ``release()`` (idempotent) removes the file."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def _read_holder(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _refuse(self, holder: dict[str, Any], how: str) -> RunLockedError:
        return RunLockedError(
            f"{self.run_dir} is in use: another prism-run ({_describe(holder)}) is training into it{how}. Wait for "
            f"it to finish or stop it; a second writer would corrupt the run")

    def acquire(self) -> None:
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # the file may be replaced between open and lock by a releasing holder
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._refuse(self._read_holder(), "") from None
                # No flock on this file system (ENOLCK, EOPNOTSUPP): decide by the recorded pid and host.
                self._acquire_by_pid()
                return
            if self._same_file(fd):
                break
            os.close(fd)
        else:  # pragma: no cover - a lock file replaced ten times in a row
            raise RunLockedError(f"{self.path}: the lock file keeps changing; is another run starting?")
        self._fd = fd
        _HELD.add(fd)
        self._write_holder()

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _acquire_by_pid(self) -> None:
        holder = self._read_holder()
        if holder:
            same_host = holder.get("host") == socket.gethostname()
            if not same_host:
                raise self._refuse(holder, f" (its host cannot be checked from here: if it is gone, delete "
                                           f"{self.path})")
            if isinstance(holder.get("pid"), int) and _pid_alive(holder["pid"]) and holder["pid"] != os.getpid():
                raise self._refuse(holder, "")
        self._write_holder()  # no holder, or a stale one: this run takes over

    def _write_holder(self) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        data = (json.dumps(record) + "\n").encode("utf-8")
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        else:
            self.path.write_bytes(data)

    def release(self) -> None:
        if self._fd is None and not self.path.exists():
            return
        if self._fd is not None or self._read_holder().get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # before closing: a newcomer that opened the old file re-checks the inode
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
