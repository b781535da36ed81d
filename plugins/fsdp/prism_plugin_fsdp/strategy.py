"""FSDP2: ``fully_shard`` each vision block and decoder layer, then the whole model as the root unit.

A model built on the meta device (``prism_core.build(spec, device="meta")``) is sharded first and materialised
after (``prism_core.materialize``): each rank allocates, initialises or reads from the weight files only its own
shards, so no rank ever holds the full model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from prism_core.materialize import materialize
from prism_core.train import distributed

if TYPE_CHECKING:
    from prism_plugin_fsdp.spec import FSDPSpec

_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def shard_unit_classes(model: torch.nn.Module) -> tuple[type, ...]:
    """The block classes the backbones ask to be wrapped individually."""
    vision = getattr(model, "vision_backbone", None)
    llm = getattr(model, "llm_backbone", None)
    return (*getattr(vision, "shard_block_classes", ()), *getattr(llm, "decoder_layer_classes", ()))


def shard_units(model: torch.nn.Module, classes: tuple[type, ...]) -> list[torch.nn.Module]:
    """Modules to shard one by one: each instance of ``classes``, or its activation-checkpoint wrapper."""
    units, inside_wrappers = [], set()
    for module in model.modules():
        inner = getattr(module, "_checkpoint_wrapped_module", None)
        if inner is not None and isinstance(inner, classes):
            units.append(module)
            inside_wrappers.add(id(inner))
    units += [m for m in model.modules() if isinstance(m, classes) and id(m) not in inside_wrappers]
    return units


class FSDPStrategy:
    sharded = True
    accepts_meta = True  # wrap() materialises meta tensors itself, after sharding

    def __init__(self, spec: FSDPSpec) -> None:
        self.spec = spec
        self.rank, self.world_size = 0, 1
        self.local_world_size = 1
        self.device = torch.device("cpu")
        self.train_precision = "bf16"
        self._created_group = False

    def configure_for(self, train: Any) -> None:
        """Learn the run's precision (``param_dtype = "auto"`` follows it)."""
        self.train_precision = train.precision

    def setup(self) -> None:
        env = distributed.launch_env()
        self.device = distributed.pick_device(env.local_rank)
        self._created_group = distributed.init_process_group(self.spec.backend, self.device) or self._created_group
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_world_size = env.local_world_size if self.world_size > 1 else 1

    def mesh(self) -> DeviceMesh:
        if self.spec.sharding == "hybrid":
            if self.world_size % self.local_world_size:
                raise RuntimeError(f"hybrid sharding needs equal ranks per node: {self.world_size} ranks, "
                                   f"{self.local_world_size} on this node")
            shape = (self.world_size // self.local_world_size, self.local_world_size)
            return init_device_mesh(self.device.type, shape, mesh_dim_names=("replicate", "shard"))
        return init_device_mesh(self.device.type, (self.world_size,), mesh_dim_names=("shard",))

    def mixed_precision(self) -> MixedPrecisionPolicy:
        param = self.spec.param_dtype if self.spec.param_dtype != "auto" else self.train_precision
        return MixedPrecisionPolicy(param_dtype=_DTYPES[param], reduce_dtype=_DTYPES[self.spec.reduce_dtype])

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if hasattr(model, "keep_all_branches_in_graph"):
            # Every rank must run every shard unit's all-gather, even for a text-only micro-batch.
            model.keep_all_branches_in_graph = True
        options = {"mesh": self.mesh(), "mp_policy": self.mixed_precision(),
                   "reshard_after_forward": self.spec.sharding != "shard-grad-op"}
        classes = shard_unit_classes(model)
        for unit in shard_units(model, classes) if classes else []:
            fully_shard(unit, **options)  # moves real tensors to the mesh's device; meta ones stay meta
        # The root's parameters are needed again at the start of backward: keep them gathered.
        fully_shard(model, **{**options, "reshard_after_forward": False})
        materialize(model, device=self.device)  # this rank's shards only
        return model

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(tensor)

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> float:
        return distributed.clip_grad_norm(model, max_norm)

    def model_state(self, model: torch.nn.Module) -> Mapping[str, Any]:
        return get_model_state_dict(model)

    def load_model_state(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
        set_model_state_dict(model, dict(state))

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.rank == 0 else {}

    def barrier(self) -> None:
        distributed.barrier()

    def teardown(self) -> None:
        self._created_group = distributed.destroy_created_group(self._created_group)
