"""Full training-state checkpoints: atomic, keep-last-K, sharded through ``torch.distributed.checkpoint``.

Layout of ``RUN_DIR/checkpoints/step-00000120/``:

- ``model.safetensors`` + ``optimizer.safetensors`` (unsharded strategies, written by rank 0), or ``dcp/`` (a
  ``torch.distributed.checkpoint`` directory holding model and optimizer shards of every rank);
- ``rng-rank{r}.safetensors`` / ``rng-rank{r}.json``: each rank's torch / CUDA / Python RNG states;
- ``trainer.json``: step, epoch, position in the epoch, scheduler and optimizer hyperparameters;
- ``meta.json``: written last. A directory is only ever visible under its ``step-*`` name once complete: every
  rank writes into ``.tmp-step-*``, and rank 0 renames it into place (an atomic rename on POSIX), so a crash at
  any moment leaves the previous checkpoint usable. Nothing here is unpickled as arbitrary Python: safetensors and
  JSON, and ``dcp/`` is read through ``prism_core.train.safe_dcp``, which admits only DCP's metadata classes and
  plain values. Whether ``dcp/`` is read at all follows ``meta.json``, never the presence of the folder.
"""

from __future__ import annotations

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

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
FORMAT_VERSION = 1


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (a ``step-*`` directory with its ``meta.json``)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "meta.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


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


# -- save -----------------------------------------------------------------------------------------------------------
def _write_model_and_optimizer(
    tmp: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, strategy: TrainStrategy
) -> None:
    if strategy.sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state = {"model": strategy.model_state(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
        dcp.save(state, checkpoint_id=str(tmp / "dcp"))
        return
    model_state = strategy.model_state(model)  # every rank calls: a strategy may gather inside
    if strategy.rank == 0:
        save_file(_cpu_tensors(model_state), str(tmp / "model.safetensors"))
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        _write_json(tmp / "optimizer.json", meta)


def _write_trainer_state(tmp: Path, trainer_state: Mapping[str, Any]) -> None:
    _write_json(tmp / "trainer.json", dict(trainer_state))


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    strategy: TrainStrategy,
    trainer_state: Mapping[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write the full training state for ``step`` (collective: every rank calls it) and return its directory.

    ``trainer_state`` (JSON-able, rank 0's is written) holds the loop's position, scheduler and sampler state.
    With ``keep_last``, older complete checkpoints beyond the newest ``keep_last`` are removed afterwards.
    """
    root = Path(run_dir) / CHECKPOINTS
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}"
    if final.is_dir() and (final / "meta.json").is_file():
        return final  # already saved at this step (e.g. the last periodic save is also the end)
    if strategy.rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left over by a crash during an earlier save of this step
            shutil.rmtree(tmp)
        tmp.mkdir()
    strategy.barrier()
    _write_model_and_optimizer(tmp, model, optimizer, strategy)
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, str(tmp / f"rng-rank{strategy.rank}.safetensors"))
    _write_json(tmp / f"rng-rank{strategy.rank}.json", rng_meta)
    strategy.barrier()
    if strategy.rank == 0:
        _write_trainer_state(tmp, trainer_state)
        _write_json(tmp / "meta.json", {"format": FORMAT_VERSION, "step": step, "world_size": strategy.world_size,
                                        "sharded": strategy.sharded})
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
        if keep_last is not None:
            prune(run_dir, keep_last)
    strategy.barrier()
    return final


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


# -- load -----------------------------------------------------------------------------------------------------------
class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, or ``CheckpointError`` naming it (missing, truncated, not safetensors)."""
    try:
        return load_file(str(file))
    except Exception as exc:  # OSError, SafetensorError: both mean this file cannot be used
        raise CheckpointError(f"{file}: cannot be read ({exc})") from None


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint, checked: its format version and whether it was saved sharded."""
    file = Path(path) / "meta.json"
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a complete checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{file}: unsupported checkpoint format {found!r}")
    if not isinstance(meta.get("sharded"), bool):
        raise CheckpointError(f"{file}: 'sharded' must be true or false, got {meta.get('sharded')!r}")
    return meta


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
        optimizer_meta = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
        optimizer.load_state_dict(_unflatten_optimizer(read_tensors(path / "optimizer.safetensors"), optimizer_meta))
    rng_file = path / f"rng-rank{strategy.rank}.safetensors"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: those ranks keep their fresh seeds
        _set_rng_state(read_tensors(rng_file), json.loads(rng_file.with_suffix(".json").read_text("utf-8")))
    return json.loads((path / "trainer.json").read_text(encoding="utf-8"))


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
