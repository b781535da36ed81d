import json
import random

import pytest
import torch
from prism_plugin_single.strategy import SingleStrategy

from prism_core.train import checkpoint as ckpt


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied, as many LLMs


def _trained(seed: int = 0):
    torch.manual_seed(seed)
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        model.head(model.embed(torch.tensor([1, 2]))).sum().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(tmp_path, step, model, opt, keep_last=None):
    strategy = SingleStrategy(device="cpu")
    return ckpt.save_checkpoint(tmp_path, step, model=model, optimizer=opt, strategy=strategy,
                                trainer_state={"step": step}, keep_last=keep_last)


def test_round_trip_restores_model_optimizer_rng_and_trainer_state(tmp_path):
    model, opt = _trained()
    torch.manual_seed(123)
    random.seed(5)
    path = _save(tmp_path, 7, model, opt)
    expected_torch, expected_py = torch.rand(3), random.random()

    other, other_opt = _trained(seed=1)
    state = ckpt.load_checkpoint(path, model=other, optimizer=other_opt, strategy=SingleStrategy(device="cpu"))
    assert state == {"step": 7}
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved, loaded = opt.state_dict(), other_opt.state_dict()
    for pid, entry in saved["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, loaded["state"][pid][key])
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_py


def test_incomplete_and_temporary_directories_are_never_picked(tmp_path):
    model, opt = _trained()
    _save(tmp_path, 2, model, opt)
    (tmp_path / "checkpoints" / ".tmp-step-00000004").mkdir()
    (tmp_path / "checkpoints" / "step-00000009").mkdir()  # no meta.json: not complete
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000002"
    ckpt.remove_stale(tmp_path)
    assert not (tmp_path / "checkpoints" / ".tmp-step-00000004").exists()


def test_keep_last_prunes_the_oldest(tmp_path):
    model, opt = _trained()
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, opt, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"]


def test_a_checkpoint_from_another_kind_of_strategy_is_refused(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path, 1, model, opt)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "sharded": True}))
    with pytest.raises(ckpt.CheckpointError, match=r"same train\.strategy kind"):
        ckpt.load_checkpoint(path, model=model, optimizer=opt, strategy=SingleStrategy(device="cpu"))


def test_model_weights_alone_load_for_an_export(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path, 3, model, opt)
    fresh = Tied()
    ckpt.load_model_weights(path, fresh)
    assert torch.equal(fresh.embed.weight, model.embed.weight)
