import math

import pytest
import torch

from prism_core.train.optim import build_optimizer, build_scheduler, lr_multiplier, param_groups, warmup_steps


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_matrices_decay_biases_and_norms_do_not_and_frozen_params_are_left_out():
    decay, no_decay = param_groups(Net(), weight_decay=0.1)
    assert decay["param_names"] == ["proj.weight"] and decay["weight_decay"] == 0.1
    assert no_decay["param_names"] == ["proj.bias", "norm.weight", "norm.bias"] and no_decay["weight_decay"] == 0.0


def test_no_trainable_parameters_is_a_clear_error():
    net = Net().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(net, learning_rate=1e-3, weight_decay=0.0)


def test_warmup_then_cosine_reaches_peak_and_ends_at_zero():
    total = 100
    warmup = warmup_steps(total, 0.03)
    assert warmup == 3
    f = lr_multiplier("linear-warmup+cosine-decay", total, warmup)
    assert [f(s) for s in range(4)] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert f(3 + 97 // 2) == pytest.approx(0.5 + 0.5 * math.cos(math.pi * (97 // 2) / 97))
    assert f(total) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(3, total))


def test_constant_schedule_warms_up_then_holds():
    f = lr_multiplier("constant", 50, 5)
    assert f(0) == 0.0 and f(5) == 1.0 and f(49) == 1.0


def test_scheduler_drives_the_optimizer_learning_rate():
    opt = build_optimizer(Net(), learning_rate=2e-5, weight_decay=0.1)
    sched = build_scheduler(opt, schedule="linear-warmup+cosine-decay", total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(2e-5) and lrs[-1] < lrs[3]
    assert {g["weight_decay"] for g in opt.param_groups} == {0.1, 0.0}
