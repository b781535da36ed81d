"""Process-group plumbing shared by the strategy plugins: torchrun's environment, device choice, backend.

Also the strategy methods that DDP and FSDP implement identically (all-reduce, gradient clipping, barrier,
teardown), so both plugins call one implementation.
"""

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


def destroy_created_group(created: bool) -> bool:
    """Destroy the default group if this strategy ``created`` it; returns the new value of that flag."""
    if created and dist.is_initialized():
        dist.destroy_process_group()
        return False
    return created


def barrier() -> None:
    """Wait for every rank; a no-op when no process group is up."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` across ranks in place and return it."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """Clip the gradients that exist to ``max_norm``; the total norm before clipping, as a float.

    Under DDP every rank holds the same all-reduced gradients, so the local norm is the global one; under FSDP2
    the gradients are DTensors and the norm comes back as one, gathered in full by ``grad_norm_as_float``.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    return grad_norm_as_float(torch.nn.utils.clip_grad_norm_(params, max_norm))


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
