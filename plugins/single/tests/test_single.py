import pytest
import torch
from prism_plugin_single.spec import SingleSpec

from prism_core.testing.conformance import TrainStrategyConformance


class TestSingleConformance(TrainStrategyConformance):
    spec = SingleSpec.from_preset("single-cpu")


def test_refuses_to_run_as_one_of_several_torchrun_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="'ddp' or 'fsdp'"):
        SingleSpec.from_preset("single-cpu").build().setup()


def test_clip_returns_the_norm_before_clipping():
    strategy = SingleSpec.from_preset("single-cpu").build()
    strategy.setup()
    model = torch.nn.Linear(2, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    assert strategy.clip_grad_norm(model, 1.0) == pytest.approx(5.0)
    assert model.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)


def test_a_bad_device_is_a_spec_problem():
    problems = dict(SingleSpec.from_preset("single-cpu", device="tpu").problems())
    assert "expected 'auto', 'cpu'" in problems["device"]
    assert not list(SingleSpec.from_preset("single-cpu", device="cuda:1").problems())
