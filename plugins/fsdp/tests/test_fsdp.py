from types import SimpleNamespace

import torch
from prism_plugin_fsdp.spec import FSDPSpec
from prism_plugin_fsdp.strategy import shard_units

from prism_core.testing.conformance import TrainStrategyConformance


class TestFSDPConformance(TrainStrategyConformance):
    spec = FSDPSpec.from_preset("fsdp-full-shard", backend="gloo")


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x)


def test_each_block_or_its_checkpoint_wrapper_is_a_shard_unit():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    model = torch.nn.Sequential(Block(), checkpoint_wrapper(Block()), torch.nn.Linear(4, 4))
    units = shard_units(model, (Block,))
    assert units == [model[1], model[0]]


def test_param_dtype_auto_follows_the_run_precision():
    strategy = FSDPSpec.from_preset("fsdp-full-shard").build()

    class Train:
        precision = "fp32"

    strategy.configure_for(Train())
    assert strategy.mixed_precision().param_dtype == torch.float32
    Train.precision = "bf16"
    strategy.configure_for(Train())
    assert strategy.mixed_precision().param_dtype == torch.bfloat16
    assert strategy.mixed_precision().reduce_dtype == torch.float32


def test_one_rank_shards_trains_and_gathers_a_full_state():
    strategy = FSDPSpec.from_preset("fsdp-full-shard", backend="gloo", param_dtype="fp32").build()
    strategy.setup()
    try:
        model = torch.nn.Sequential(Block(), Block())
        model.llm_backbone = SimpleNamespace(decoder_layer_classes=(Block,))  # what the strategy reads
        wrapped = strategy.wrap(model)
        wrapped(torch.ones(2, 4)).sum().backward()
        assert strategy.clip_grad_norm(wrapped, 1.0) > 0
        full = strategy.full_state_dict(wrapped)
        assert set(full) == {"0.lin.weight", "0.lin.bias", "1.lin.weight", "1.lin.bias"}
        assert all(type(t) is torch.Tensor for t in full.values())
    finally:
        strategy.teardown()


def test_cpu_reduce_scatter_frees_its_input_once_the_collective_returns():
    import torch.distributed as dist
    from prism_plugin_fsdp.strategy import _CPUReduceScatter

    strategy = FSDPSpec.from_preset("fsdp-full-shard", backend="gloo").build()
    strategy.setup()
    try:
        comm = _CPUReduceScatter()
        grads = comm.allocate((6,), dtype=torch.float32, device=torch.device("cpu"))
        grads.copy_(torch.arange(6.0))
        out = comm.allocate((6,), dtype=torch.float32, device=torch.device("cpu"))
        comm(output_tensor=out, input_tensor=grads, group=dist.group.WORLD, op=dist.ReduceOp.SUM)
        assert out.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # one rank: its own gradients
        assert grads.untyped_storage().nbytes() == 0  # not kept alive until the next unit's reduce-scatter
    finally:
        strategy.teardown()
