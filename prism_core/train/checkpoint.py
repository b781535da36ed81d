"""Full training-state checkpoints: atomic, verified, keep-last-K, sharded through ``torch.distributed.checkpoint``.

Layout of ``RUN_DIR/checkpoints/step-00000120/``:

- ``model.safetensors`` + ``optimizer.safetensors`` (unsharded strategies, written by rank 0), or ``dcp/`` (a
  ``torch.distributed.checkpoint`` directory holding model and optimizer shards of every rank);
- ``rng-rank{r}.safetensors`` / ``rng-rank{r}.json``: each rank's torch / CUDA / Python RNG states;
- ``trainer.json``: step, epoch, position in the epoch, scheduler state, skipped-example counts;
- ``spec.toml``: the resolved spec this state was trained with (a resume compares the run's spec with it);
- ``meta.json``: written last, with the manifest: every other file's size and SHA-256. The ranks hash the files
  between them (each a share, largest first to the least loaded), so a save costs one read of the checkpoint spread
  over every rank, and a resume checks the same way before anything is loaded (``verify``).

A directory is only ever visible under its ``step-*`` name once complete: every rank writes into ``.tmp-step-*``,
and rank 0 renames it into place (an atomic rename on POSIX), so a crash at any moment leaves the previous checkpoint
usable. A failed write (a full disk, say) fails on every rank at once, removes the temporary directory and says how
much space it needed. Nothing here is unpickled as arbitrary Python: safetensors and JSON, and ``dcp/`` is read
through ``prism_core.train.safe_dcp``, which admits only DCP's metadata classes and plain values. Whether ``dcp/`` is
read at all follows ``meta.json``, never the presence of the folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prism_core.protocols import TrainStrategy
from prism_core.train.agree import agree, any_rank

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
#: 2 adds the manifest (``meta.json`` "files"); format 1 checkpoints are still read, unverified.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
META = "meta.json"
SPEC = "spec.toml"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Every ``step-*`` directory of a run, complete or not, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), child) for child in root.iterdir() if (m := _STEP_DIR.match(child.name)))


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (a ``step-*`` directory with its ``meta.json``; ``verify``
    says whether one is intact)."""
    return [(step, path) for step, path in step_dirs(run_dir) if (path / META).is_file()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


# -- tensors in, tensors out --------------------------------------------------------------------------------------
def _cpu_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and with no two entries sharing storage (tied weights), as safetensors requires."""
    out, seen = {}, set()
    for key, value in state.items():
        tensor = value.detach().to("cpu").contiguous()
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.dtype, tuple(tensor.shape))
        if ptr in seen:
            tensor = tensor.clone()
        seen.add(ptr)
        out[key] = tensor
    return out


def _flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` → (tensors, JSON): tensors keyed ``state.{param}.{name}``."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return _cpu_tensors(tensors), {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, entry in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the manifest ----------------------------------------------------------------------------------------------
def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_share(sizes: Mapping[str, int], rank: int, world_size: int) -> list[str]:
    """The files (relative paths) ``rank`` hashes: largest first to the least-loaded rank, ties to the lowest rank.
    Every rank computes the same split from the same listing."""
    loads = [0] * world_size
    mine = []
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        owner = min(range(world_size), key=lambda r: (loads[r], r))
        loads[owner] += sizes[name]
        if owner == rank:
            mine.append(name)
    return mine


def _listing(directory: Path) -> dict[str, int]:
    """Relative path → size of every file under ``directory`` except ``meta.json`` and the hash parts."""
    out = {}
    for file in sorted(directory.rglob("*")):
        name = file.relative_to(directory).as_posix()
        if file.is_file() and name != META and not name.startswith(".hashes-"):
            out[name] = file.stat().st_size
    return out


def human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


# -- save -----------------------------------------------------------------------------------------------------------
class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used or written; the message names the file."""


def _nbytes(tensors: Any) -> int:
    """Bytes of every tensor in a (nested) state dict; a DTensor counts in full (``numel`` is its global size)."""
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, Mapping):
        return sum(_nbytes(v) for v in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(_nbytes(v) for v in tensors)
    return 0


def _is_disk_full(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(e) for text in ("No space left on device", "StorageFull", "Disk quota exceeded")):
            return True
        stack += [e.__cause__, e.__context__]
    return False


class _Save:
    """One checkpoint being written: what it needs, and the error every rank raises if any write fails."""

    def __init__(self, run_dir: Path, step: int, strategy: TrainStrategy) -> None:
        self.run_dir, self.step, self.strategy = Path(run_dir), step, strategy
        self.root = self.run_dir / CHECKPOINTS
        self.final = self.root / step_dir_name(step)
        self.tmp = self.root / f".tmp-{step_dir_name(step)}"
        self.needed = self._previous_size()  # raised to the bytes of tensors this save writes, once known

    def _previous_size(self) -> int:
        """The size of the newest complete checkpoint (its manifest), the best guess of what this one needs."""
        for _, path in reversed(list_checkpoints(self.run_dir)):
            try:
                return sum(entry["size"] for entry in read_meta(path).get("files", {}).values())
            except CheckpointError:
                continue
        return 0

    def check_space(self, tensor_bytes: int, collective: bool = False) -> None:
        """Refuse before writing what cannot fit. ``collective``: every rank decides together (before a collective
        write, where one rank refusing alone would leave the others waiting in it)."""
        self.needed = max(self.needed, tensor_bytes)
        free = shutil.disk_usage(self.root).free
        short = self.needed > free
        if any_rank(self.strategy, short) if collective else short:
            raise OSError(errno.ENOSPC, f"needs about {human_size(self.needed)}, {human_size(free)} free")

    def failed(self, exc: BaseException) -> CheckpointError:
        previous = [p for s, p in list_checkpoints(self.run_dir) if s != self.step]
        kept = (f"the previous checkpoint {previous[-1].name} is intact" if previous
                else "no earlier checkpoint exists")
        if _is_disk_full(exc):
            try:  # counted as it will be once the partial checkpoint is removed
                partial = sum(f.stat().st_size for f in self.tmp.rglob("*") if f.is_file())
                free = human_size(shutil.disk_usage(self.root).free + partial)
            except OSError:
                free = "unknown"
            reason = (f"no space left on device: it needs about {human_size(self.needed)}, {free} free on that disk; "
                      f"{kept}. Free some space, then continue with `prism-run --resume {self.run_dir}`")
        else:
            reason = f"{type(exc).__name__}: {exc}; {kept}"
        return CheckpointError(f"{self.tmp}: cannot write checkpoint step {self.step}: {reason}")

    def run(self, action: Any, *args: Any) -> Any:
        """``action(*args)`` on this rank, then agree with the others (a failure anywhere fails everywhere)."""
        error, result = None, None
        try:
            result = action(*args)
        except Exception as exc:
            error = self.failed(exc)
        try:
            agree(self.strategy, error)
        except Exception:  # written partly or not at all: the temporary directory goes, once every rank stopped
            if self.strategy.rank == 0:
                shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return result


def _write_model_and_optimizer(
    save: _Save, model: torch.nn.Module, optimizer: torch.optim.Optimizer, strategy: TrainStrategy
) -> None:
    tmp = save.tmp
    if strategy.sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state = {"model": strategy.model_state(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
        save.check_space(_nbytes(state), collective=True)
        dcp.save(state, checkpoint_id=str(tmp / "dcp"))
        return
    model_state = strategy.model_state(model)  # every rank calls: a strategy may gather inside
    if strategy.rank == 0:
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save.check_space(_nbytes(model_state) + _nbytes(tensors))
        save_file(_cpu_tensors(model_state), str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        _write_json(tmp / "optimizer.json", meta)


def _write_trainer_state(tmp: Path, trainer_state: Mapping[str, Any]) -> None:
    _write_json(tmp / "trainer.json", dict(trainer_state))


def _prepare(save: _Save) -> None:
    save.root.mkdir(parents=True, exist_ok=True)
    if save.tmp.exists():  # left over by a crash during an earlier save of this step
        shutil.rmtree(save.tmp)
    save.tmp.mkdir()


def _write_state(save: _Save, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 trainer_state: Mapping[str, Any], spec_text: str | None) -> None:
    strategy = save.strategy
    _write_model_and_optimizer(save, model, optimizer, strategy)
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, str(save.tmp / f"rng-rank{strategy.rank}.safetensors"))
    _write_json(save.tmp / f"rng-rank{strategy.rank}.json", rng_meta)
    if strategy.rank == 0:
        _write_trainer_state(save.tmp, trainer_state)
        if spec_text is not None:
            (save.tmp / SPEC).write_text(spec_text, encoding="utf-8")


def _hash_my_share(save: _Save) -> None:
    sizes = _listing(save.tmp)
    mine = {name: {"size": sizes[name], "sha256": _sha256(save.tmp / name)}
            for name in hash_share(sizes, save.strategy.rank, save.strategy.world_size)}
    _write_json(save.tmp / f".hashes-rank{save.strategy.rank}.json", mine)


def _publish(save: _Save, keep_last: int | None) -> None:
    """Rank 0: merge the hash parts into ``meta.json`` (written last), rename into place, prune."""
    files: dict[str, Any] = {}
    for part in sorted(save.tmp.glob(".hashes-rank*.json")):
        files.update(json.loads(part.read_text(encoding="utf-8")))
        part.unlink()
    missing = sorted(set(_listing(save.tmp)) - set(files))
    if missing:
        raise RuntimeError(f"files not hashed by any rank: {', '.join(missing)}")
    strategy = save.strategy
    _write_json(save.tmp / META, {"format": FORMAT_VERSION, "step": save.step, "world_size": strategy.world_size,
                                  "sharded": bool(strategy.sharded), "files": dict(sorted(files.items()))})
    _fsync_dir(save.tmp)
    if save.final.exists():  # a step-* directory without meta.json (never complete): keep it aside, not in the way
        os.rename(save.final, _aside(save.final, "damaged"))
    os.rename(save.tmp, save.final)
    _fsync_dir(save.root)
    if keep_last is not None:
        prune(save.run_dir, keep_last)


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    strategy: TrainStrategy,
    trainer_state: Mapping[str, Any],
    keep_last: int | None = None,
    spec_text: str | None = None,
) -> Path:
    """Write the full training state for ``step`` (collective: every rank calls it) and return its directory.

    ``trainer_state`` (JSON-able, rank 0's is written) holds the loop's position, scheduler and sampler state;
    ``spec_text`` the run's resolved spec. With ``keep_last``, older complete checkpoints beyond the newest
    ``keep_last`` are removed afterwards. A failed write raises ``CheckpointError`` on every rank.
    """
    save = _Save(run_dir, step, strategy)
    if save.final.is_dir() and (save.final / META).is_file():
        return save.final  # already saved at this step (e.g. the last periodic save is also the end)
    rank0 = strategy.rank == 0
    save.run(_prepare if rank0 else (lambda _: None), save)
    save.run(_write_state, save, model, optimizer, trainer_state, spec_text)
    save.run(_hash_my_share, save)
    save.run(_publish if rank0 else (lambda *_: None), save, keep_last)
    return save.final


def _aside(path: Path, label: str) -> Path:
    """A free name ``{label}-{path.name}[-k]`` beside ``path`` (never matched as a checkpoint)."""
    target, k = path.with_name(f"{label}-{path.name}"), 1
    while target.exists():
        target, k = path.with_name(f"{label}-{path.name}-{k}"), k + 1
    return target


def move_aside(path: Path, label: str) -> Path:
    """Rename a checkpoint out of the way (``damaged-step-*``, ``superseded-step-*``), kept for inspection."""
    target = _aside(path, label)
    os.rename(path, target)
    return target


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Remove all but the newest ``keep_last`` complete checkpoints and any stale temporary directories.

    A checkpoint is renamed aside before deletion, so a crash mid-delete never leaves a half-deleted
    directory under a ``step-*`` name.
    """
    removed = []
    for _, path in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else list_checkpoints(run_dir):
        doomed = path.with_name(f".del-{path.name}")
        os.rename(path, doomed)
        shutil.rmtree(doomed)
        removed.append(path)
    return removed


def remove_stale(run_dir: Path) -> None:
    """Delete what interrupted saves and prunes left behind (``.tmp-*`` / ``.del-*``)."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith((".tmp-", ".del-")):
                shutil.rmtree(child, ignore_errors=True)


# -- verify and load ---------------------------------------------------------------------------------------------
def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, or ``CheckpointError`` naming it (missing, truncated, not safetensors)."""
    try:
        return load_file(str(file))
    except Exception as exc:  # OSError, SafetensorError: both mean this file cannot be used
        raise CheckpointError(f"{file}: cannot be read ({exc})") from None


def read_json(file: Path) -> Any:
    """A checkpoint's JSON file, or ``CheckpointError`` naming it."""
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: cannot be read ({exc})") from None


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint, checked: its format version, whether it was saved sharded, its manifest."""
    file = Path(path) / META
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing (the checkpoint's metadata and manifest)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a complete checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") not in READABLE_FORMATS:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{file}: unsupported checkpoint format {found!r}")
    if not isinstance(meta.get("sharded"), bool):
        raise CheckpointError(f"{file}: 'sharded' must be true or false, got {meta.get('sharded')!r}")
    files = meta.get("files", {} if meta["format"] == 1 else None)
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    ):
        raise CheckpointError(f"{file}: the manifest ('files') is malformed")
    return meta


def verify(path: Path, rank: int = 0, world_size: int = 1) -> list[str]:
    """Problems of the checkpoint at ``path``, each naming a file: ``meta.json`` missing or malformed, a listed file
    missing or of another size (all checked by every rank), or its SHA-256 not the manifest's (each rank hashes its
    ``hash_share``; with the defaults, one process hashes everything). Empty: intact."""
    path = Path(path)
    try:
        files = read_meta(path)["files"]
    except CheckpointError as exc:
        return [str(exc)]
    problems = []
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file.stat().st_size != entry["size"]:
            problems.append(f"{file}: {file.stat().st_size} bytes, the manifest says {entry['size']} "
                            f"(truncated or overwritten)")
    if problems:
        return problems
    for name in hash_share({n: e["size"] for n, e in files.items()}, rank, world_size):
        if _sha256(path / name) != files[name]["sha256"]:
            problems.append(f"{path / name}: contents differ from the manifest's SHA-256 (corrupted or altered)")
    return problems


def load_checkpoint(
    path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, strategy: TrainStrategy
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG states from ``path``; return the saved ``trainer_state``."""
    path = Path(path)
    meta = read_meta(path)
    if meta["sharded"] != bool(strategy.sharded):
        raise CheckpointError(f"{path}: saved by a {'sharded' if meta['sharded'] else 'unsharded'} strategy; "
                              f"resume with the same train.strategy kind")
    if strategy.sharded:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

        from prism_core.train import safe_dcp

        state = {"model": strategy.model_state(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
        safe_dcp.load(state, path / "dcp")
        strategy.load_model_state(model, state["model"])
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
    else:
        strategy.load_model_state(model, read_tensors(path / "model.safetensors"))
        optimizer_meta = read_json(path / "optimizer.json")
        try:
            optimizer.load_state_dict(_unflatten_optimizer(read_tensors(path / "optimizer.safetensors"),
                                                           optimizer_meta))
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path / 'optimizer.json'}: does not fit this optimizer ({exc})") from None
    rng_file = path / f"rng-rank{strategy.rank}.safetensors"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: those ranks keep their fresh seeds
        try:
            _set_rng_state(read_tensors(rng_file), read_json(rng_file.with_suffix(".json")))
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{rng_file}: not an RNG state ({exc})") from None
    return read_json(path / "trainer.json")


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    """Only the model weights of a checkpoint, into an unwrapped single-process model (for exports).

    Sharded (``dcp/``) checkpoints are read without a process group and consolidated on the way in.
    """
    path = Path(path)
    if read_meta(path)["sharded"]:
        from prism_core.train import safe_dcp

        state = {"model": model.state_dict()}
        safe_dcp.load(state, path / "dcp")
        model.load_state_dict(state["model"])
    else:
        model.load_state_dict(read_tensors(path / "model.safetensors"))
