import torch
from prism_plugin_ddp.spec import DDPSpec

from prism_core.testing.conformance import TrainStrategyConformance


class TestDDPConformance(TrainStrategyConformance):
    spec = DDPSpec.from_preset("ddp-gloo")


def test_wraps_in_ddp_keeps_all_branches_and_checkpoints_the_inner_module():
    strategy = DDPSpec.from_preset("ddp-gloo").build()
    strategy.setup()  # a group of one on loopback when not under torchrun
    try:
        model = torch.nn.Linear(2, 2)
        model.keep_all_branches_in_graph = False
        wrapped = strategy.wrap(model)
        assert type(wrapped).__name__ == "DistributedDataParallel" and model.keep_all_branches_in_graph
        assert set(strategy.model_state(wrapped)) == {"weight", "bias"}  # no "module." prefix
        with strategy.no_sync(wrapped):
            wrapped(torch.ones(1, 2)).sum().backward()
        assert model.weight.grad is not None
    finally:
        strategy.teardown()
