"""Single-process training: the model moves to one device; every collective is the identity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from prism_core.materialize import materialize
from prism_core.train.distributed import clip_grad_norm, launch_env, pick_device


class SingleStrategy:
    sharded = False
    accepts_meta = True  # wrap() materialises a meta-device model on this rank's device

    def __init__(self, device: str = "auto") -> None:
        self._device_name = device
        self.rank, self.world_size = 0, 1
        self.device = torch.device("cpu")

    def setup(self) -> None:
        env = launch_env()
        if env.world_size > 1:
            raise RuntimeError(
                f"train.strategy.kind = 'single' runs one process, but torchrun started {env.world_size}: "
                "set train.strategy.kind = 'ddp' or 'fsdp' to train on several ranks"
            )
        self.device = pick_device(0, self._device_name)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return materialize(model, device=self.device).to(self.device)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> float:
        return clip_grad_norm(model, max_norm)

    def model_state(self, model: torch.nn.Module) -> Mapping[str, Any]:
        return model.state_dict()

    def load_model_state(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
        model.load_state_dict(state)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}

    def barrier(self) -> None:
        pass

    def teardown(self) -> None:
        pass
