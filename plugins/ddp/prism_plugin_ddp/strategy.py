"""DistributedDataParallel: replicate the model, all-reduce (average) gradients in buckets during backward."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from prism_core.materialize import materialize
from prism_core.train import distributed

if TYPE_CHECKING:
    from prism_plugin_ddp.spec import DDPSpec


class DDPStrategy:
    sharded = False
    accepts_meta = True  # wrap() materialises a meta-device model on this rank's device

    def __init__(self, spec: DDPSpec) -> None:
        self.spec = spec
        self.rank, self.world_size = 0, 1
        self.device = torch.device("cpu")
        self._created_group = False

    def setup(self) -> None:
        env = distributed.launch_env()
        self.device = distributed.pick_device(env.local_rank)
        self._created_group = distributed.init_process_group(self.spec.backend, self.device) or self._created_group
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if hasattr(model, "keep_all_branches_in_graph"):
            # A text-only micro-batch on one rank must still touch the projector, or DDP's reducer waits forever.
            model.keep_all_branches_in_graph = True
        model = materialize(model, device=self.device).to(self.device)  # every rank holds the whole model
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            bucket_cap_mb=self.spec.bucket_cap_mb,
            find_unused_parameters=self.spec.find_unused_parameters,
            gradient_as_bucket_view=True,
        )

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module) -> Iterator[None]:
        """Skip the all-reduce on accumulation micro-batches; the last one reduces the summed gradients."""
        with model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext():
            yield

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(tensor)

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> float:
        return distributed.clip_grad_norm(model, max_norm)

    def model_state(self, model: torch.nn.Module) -> Mapping[str, Any]:
        return distributed.unwrap(model).state_dict()

    def load_model_state(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
        distributed.unwrap(model).load_state_dict(state)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        if self.rank != 0:
            return {}
        return {k: v.detach().to("cpu") for k, v in distributed.unwrap(model).state_dict().items()}

    def barrier(self) -> None:
        distributed.barrier()

    def teardown(self) -> None:
        self._created_group = distributed.destroy_created_group(self._created_group)
