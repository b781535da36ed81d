"""Process-group plumbing shared by the strategy plugins: torchrun's environment, device choice, backend."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun (or nothing) told this process."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int


def launch_env() -> LaunchEnv:
    def env_int(name: str, default: int) -> int:
        return int(os.environ.get(name, default))

    world = env_int("WORLD_SIZE", 1)
    return LaunchEnv(env_int("RANK", 0), env_int("LOCAL_RANK", 0), world, env_int("LOCAL_WORLD_SIZE", world))


def pick_device(local_rank: int, device: str = "auto") -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU."""
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    return chosen


def init_process_group(backend: str, device: torch.device) -> bool:
    """Initialise the default group from torchrun's environment; False if one already existed."""
    if dist.is_initialized():
        return False
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict = {"device_id": device} if device.type == "cuda" else {}
    if "MASTER_ADDR" not in os.environ:  # started without torchrun: a group of one on loopback
        kwargs.update(init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    dist.init_process_group(backend=backend, **kwargs)
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place and needs no unwrapping)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def grad_norm_as_float(norm: torch.Tensor) -> float:
    full = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2
    return float(full() if full is not None else norm)
