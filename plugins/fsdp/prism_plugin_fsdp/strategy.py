"""FSDP2: ``fully_shard`` each vision block and decoder layer, then the whole model as the root unit.

A model built on the meta device (``prism_core.build(spec, device="meta")``) is sharded first and materialised
after (``prism_core.materialize``): each rank allocates, initialises or reads from the weight files only its own
shards, so no rank ever holds the full model.

On CPU (gloo) every collective runs to completion on the calling thread, so FSDP's overlap machinery buys no time
there and only holds memory: a unit's worth for the backward prefetch and another for the reduce-scatter input FSDP
keeps alive for CUDA stream ordering. ``_drop_cpu_overlap`` turns both off; on GPUs nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class _CPUReduceScatter:
    """FSDP2's reduce-scatter comm (``set_custom_reduce_scatter``) for CPU process groups: the collective is
    synchronous, so the gradient buffer it reads is freed as soon as it returns instead of when the next unit's
    reduce-scatter starts (FSDP keeps it alive for CUDA streams, which CPU does not have)."""

    def allocate(self, size: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: dist.ProcessGroup,
                 op: Any, async_op: bool = False) -> None:
        if hasattr(dist, "reduce_scatter_single"):  # torch >= 2.14 deprecates reduce_scatter_tensor
            dist.reduce_scatter_single(output=output_tensor, input=input_tensor, group=group, op=op)
        else:
            dist.reduce_scatter_tensor(output_tensor, input_tensor, op=op, group=group)
        input_tensor.untyped_storage().resize_(0)


def _drop_cpu_overlap(units: list[Any]) -> None:
    """No backward prefetch (each unit "prefetches" itself, a no-op) and no kept-alive reduce-scatter input."""
    for unit in units:
        unit.set_modules_to_backward_prefetch([unit])
        if hasattr(unit, "set_custom_reduce_scatter"):  # not in older torch
            unit.set_custom_reduce_scatter(_CPUReduceScatter())


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
        units = shard_units(model, classes) if classes else []
        for unit in units:
            fully_shard(unit, **options)  # moves real tensors to the mesh's device; meta ones stay meta
        # The root's parameters are needed again at the start of backward: keep them gathered.
        fully_shard(model, **{**options, "reshard_after_forward": False})
        if self.device.type == "cpu":
            _drop_cpu_overlap([*units, model])
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
