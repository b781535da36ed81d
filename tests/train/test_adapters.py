"""``[train.adapter]`` through the whole recipe on the core fakes (LoRA / DoRA from prism-plugin-peft): what trains
and what is saved, one process against DDP and FSDP on 2 ranks, exact resume, accumulation, activation
checkpointing and bf16, the resume rules, ``prism-run --export`` and ``prism export merged``."""

import json

import attrs
import pytest
import torch
from safetensors.torch import load_file

import prism_core
from prism_core.spec import loads_spec
from prism_core.train import checkpoint as ckpt
from prism_core.train.loop import train
from prism_core.train.trackers import read_metrics
from tests.train.conftest import run_worker
from tests.train.test_distributed import _torchrun
from tests.train.toy_run import spec_toml

LORA = {"kind": "lora", "r": 4, "alpha": 8.0, "fully_trained_learning_rate": 1e-3}
DORA = {**LORA, "kind": "dora"}


def _spec(tmp_path, run_name, adapter=LORA, **train_overrides):
    return spec_toml(str(tmp_path), run_name=run_name, adapter=adapter, **train_overrides)


def _train(tmp_path, run_name, adapter=LORA, **train_overrides):
    return train(loads_spec(_spec(tmp_path, run_name, adapter, **train_overrides)))


def _curve(run_dir):
    return [(r["step"], r["loss"], r["grad_norm"], r["learning_rate"]) for r in read_metrics(run_dir)]


def _assert_close_curves(ours, reference, rel=1e-5):
    assert [c[0] for c in ours] == [c[0] for c in reference]
    for a, b in zip(ours, reference, strict=True):
        assert a[1] == pytest.approx(b[1], rel=rel) and a[2] == pytest.approx(b[2], rel=1e-4) and a[3] == b[3]


def _logits(vlm):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 200, (2, 7), generator=gen)
    ids[:, 0] = vlm.tokenizer.bos_token_id
    with torch.no_grad():
        pixels = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
        return vlm(ids, torch.ones_like(ids, dtype=torch.bool), pixel_values=pixels).logits


def test_the_adapter_and_the_projector_train_and_only_they_are_saved(tmp_path, toy_registry):
    result = _train(tmp_path, "lora", max_steps=3, save_every=3)
    optimizer = json.loads((ckpt.latest_checkpoint(result.run_dir) / "optimizer.json").read_text())
    groups = [(g["initial_lr"], g["param_names"]) for g in optimizer["param_groups"]]  # peak learning rates
    adapter_names = [n for lr, names in groups if lr == 3e-3 for n in names]  # train.learning_rate
    projector_names = [n for lr, names in groups if lr == 1e-3 for n in names]  # fully_trained_learning_rate
    assert adapter_names and all(".lora_" in n for n in adapter_names)
    assert projector_names and all(n.startswith("projector.") for n in projector_names)
    assert len(adapter_names) + len(projector_names) == sum(len(names) for _, names in groups)
    saved = load_file(str(ckpt.latest_checkpoint(result.run_dir) / "model.safetensors"))
    assert set(saved) == {n for _, names in groups for n in names}  # no frozen base weight in the checkpoint
    files = {p.name for p in (result.run_dir / "model").iterdir()}
    assert files == {"model.toml", "adapter.toml", "prism.json", "trained.safetensors", "adapter_model.safetensors",
                     "adapter_config.json"}
    assert set(load_file(str(result.run_dir / "model" / "trained.safetensors"))) == {
        n for n in saved if n.startswith("projector.")}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(("kind", "adapter"), [("ddp", LORA), ("fsdp", LORA), ("fsdp", DORA)])
def test_two_ranks_train_the_adapter_as_one_process_does(tmp_path, toy_registry, kind, adapter):
    reference = _train(tmp_path, "single", adapter)
    spec = tmp_path / "spec.toml"
    spec.write_text(_spec(tmp_path, kind, adapter, strategy={"kind": kind}))
    out = _torchrun(str(spec))
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_close_curves(_curve(tmp_path / kind), _curve(reference.run_dir))
    ours, theirs = prism_core.load(tmp_path / kind), prism_core.load(reference.run_dir)
    assert torch.allclose(_logits(ours), _logits(theirs), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "adapter"), [("single", LORA), ("fsdp", DORA)])
def test_a_stopped_adapter_run_resumes_exactly(tmp_path, toy_registry, kind, adapter):
    reference = _train(tmp_path, "ref", adapter, save_every=2)
    spec = tmp_path / "spec.toml"
    spec.write_text(_spec(tmp_path, "stopped", adapter, save_every=2, strategy={"kind": kind}))
    launch = run_worker if kind == "single" else _torchrun
    stopped = launch(str(spec), PRISM_TEST_SIGTERM_AT_STEP="3")
    assert stopped.returncode != 0 and ckpt.latest_checkpoint(tmp_path / "stopped").name == "step-00000003"
    resumed = launch("--resume", str(tmp_path / "stopped"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if kind == "single":
        assert _curve(tmp_path / "stopped") == _curve(reference.run_dir)  # bitwise
    else:
        _assert_close_curves(_curve(tmp_path / "stopped"), _curve(reference.run_dir))


@pytest.mark.slow
def test_accumulation_and_activation_checkpointing_leave_the_adapter_curve_unchanged(tmp_path, toy_registry):
    whole = _train(tmp_path, "whole", per_device_batch_size=8, max_steps=4)
    accumulated = _train(tmp_path, "acc", per_device_batch_size=2, max_steps=4, activation_checkpointing=True)
    _assert_close_curves(_curve(accumulated.run_dir), _curve(whole.run_dir))


def test_bf16_trains_the_adapter_and_the_export_loads(tmp_path, toy_registry):
    result = _train(tmp_path, "bf16", precision="bf16", max_steps=3)
    losses = [r["loss"] for r in read_metrics(result.run_dir)]
    assert all(torch.isfinite(torch.tensor(losses)))
    vlm = prism_core.load(result.run_dir)
    assert vlm.adapter is not None and torch.isfinite(_logits(vlm)).all()


def test_export_merged_writes_a_plain_model_that_computes_what_the_adapter_did(tmp_path, toy_registry, capsys):
    from prism_core.cli.main import main

    result = _train(tmp_path, "lora", max_steps=3)
    adapted = prism_core.load(result.run_dir)
    assert main(["export", "merged", str(result.run_dir), str(tmp_path / "merged")]) == 0
    assert "merged the lora adapter" in capsys.readouterr().out
    merged = prism_core.load(tmp_path / "merged")
    assert merged.adapter is None and (tmp_path / "merged" / "model.safetensors").is_file()
    assert torch.allclose(_logits(merged), _logits(adapted), atol=1e-5)
    assert main(["export", "merged", str(tmp_path / "merged"), str(tmp_path / "again")]) == 2
    assert "carries no adapter" in capsys.readouterr().err


def test_prism_run_export_of_an_adapter_checkpoint_loads_as_the_final_model(tmp_path, toy_registry):
    result = _train(tmp_path, "lora", max_steps=3)
    out = run_worker("--export", str(result.run_dir), "--out", str(tmp_path / "exported"))
    assert out.returncode == 0, out.stderr
    assert torch.equal(_logits(prism_core.load(tmp_path / "exported")), _logits(prism_core.load(result.run_dir)))


def test_warm_starting_from_an_adapter_says_to_merge_it_first(tmp_path, toy_registry):
    from prism_core.composition import build
    from prism_core.io import ModelFormatError

    result = _train(tmp_path, "lora", max_steps=1)
    spec = loads_spec(spec_toml(str(tmp_path), run_name="x"))
    with pytest.raises(ModelFormatError, match="prism export merged"):
        build(attrs.evolve(spec.model, init_from=str(result.run_dir / "model")))


def test_resume_refuses_a_changed_adapter_but_applies_a_new_dropout(tmp_path, toy_registry):
    from prism_core.train import resume

    result = _train(tmp_path, "lora", max_steps=2, save_every=2)
    choice = resume.Choice(path=ckpt.latest_checkpoint(result.run_dir), step=2)
    changed = loads_spec(_spec(tmp_path, "lora", {**LORA, "dropout": 0.1, "fully_trained_learning_rate": 5e-4},
                               max_steps=2, save_every=2))
    changes = {c.path: c for c in resume.check_spec(choice, changed, result.run_dir / "spec.toml")}
    assert set(changes) == {"train.adapter.dropout", "train.adapter.fully_trained_learning_rate"}
    assert all(c.allowed for c in changes.values())
    for adapter in ({**LORA, "r": 8}, {**LORA, "target": ["llm.*q_proj"]}, None):
        edited = loads_spec(_spec(tmp_path, "lora", adapter, max_steps=2, save_every=2))
        with pytest.raises(resume.ResumeError, match=r"train\.adapter.*the adapter's layers and parameters"):
            resume.check_spec(choice, edited, result.run_dir / "spec.toml")


def test_a_target_that_names_nothing_stops_prism_run_with_exit_2(tmp_path, toy_registry):
    spec = tmp_path / "spec.toml"
    spec.write_text(_spec(tmp_path, "bad", {**LORA, "target": ["llm.*qproj"]}))
    out = run_worker(str(spec))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "train.adapter.target[0]: 'llm.*qproj' matches no parameter or module" in out.stderr
    assert "q_proj" in out.stderr  # the closest names


def test_train_trainable_with_an_adapter_is_a_spec_error(tmp_path, toy_registry):
    from prism_core.spec import SpecError

    with pytest.raises(SpecError, match=r"train\.trainable: with train\.adapter"):
        loads_spec(_spec(tmp_path, "x", trainable=["projector.*"]))
