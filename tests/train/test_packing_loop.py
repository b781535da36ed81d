"""``[train] packing`` end to end on the core fakes: the same loss curve as unpacked training, an exact mid-epoch
resume, a spec error for an LLM that cannot isolate examples, and ``compile``."""

from __future__ import annotations

import attrs
import pytest

from prism_core.spec import SpecError, loads_spec
from prism_core.testing.fakes import FakeLLMSpec
from prism_core.train import checkpoint as ckpt
from prism_core.train.loop import train
from prism_core.train.resume import ResumeError
from prism_core.train.trackers import read_metrics
from tests.train.conftest import run_worker
from tests.train.toy_run import spec_toml

#: Toy rows are 40-80 positions (16 of them image tokens): two or three share a row.
PACKED = {"packing": True, "max_length": 128}


def _train(tmp_path, run_name, **overrides):
    spec = loads_spec(spec_toml(str(tmp_path), run_name=run_name, **overrides))
    return train(spec)


def _curve(run_dir, keys=("loss", "grad_norm", "learning_rate")):
    return [{k: r[k] for k in ("step", *keys)} for r in read_metrics(run_dir)]


def test_packed_training_follows_the_unpacked_loss_curve(tmp_path, toy_registry):
    unpacked = _train(tmp_path, "unpacked", max_length=128)
    packed = _train(tmp_path, "packed", **PACKED)
    for a, b in zip(read_metrics(unpacked.run_dir), read_metrics(packed.run_dir), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["supervised_tokens"] == a["supervised_tokens"]
        assert b["samples_per_s"] * b["step_time_s"] == pytest.approx(8)  # examples, not packed rows


@pytest.mark.slow
def test_packed_training_resumes_mid_epoch_exactly(tmp_path, toy_registry):
    reference = _train(tmp_path, "ref", save_every=2, **PACKED)
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(spec_toml(str(tmp_path), run_name="stopped", save_every=2, **PACKED))
    stopped = run_worker(str(spec_file), PRISM_TEST_SIGTERM_AT_STEP="3")
    assert stopped.returncode == 143, stopped.stderr
    run_dir = tmp_path / "stopped"
    state = ckpt.read_json(ckpt.latest_checkpoint(run_dir) / "trainer.json")
    assert (state["step"], state["epoch_step"]) == (3, 3) and state["data"] is not None  # 5 steps per epoch
    resumed = run_worker("--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert _curve(run_dir) == _curve(reference.run_dir)


def test_a_resume_cannot_switch_packing(tmp_path, toy_registry):
    finished = _train(tmp_path, "switch", max_steps=2, **PACKED)
    spec_file = finished.run_dir / "spec.toml"
    spec_file.write_text(spec_file.read_text().replace("packing = true", "packing = false"))
    with pytest.raises(ResumeError, match=r"train\.packing: True → False \(which examples each rank's micro-batches"):
        train(loads_spec(spec_file.read_text()), resume_dir=finished.run_dir)


def test_packing_with_an_llm_that_cannot_isolate_examples_is_a_spec_error(tmp_path, toy_registry):
    @attrs.frozen(kw_only=True)
    class NoPackingLLM(FakeLLMSpec):
        kind = "fake-llama-unpacked"

        @property
        def supports_packing(self) -> bool:
            return False

    toy_registry.register(NoPackingLLM, distribution="tests", version="0")
    model = {"vision": {"kind": "fake-vit"}, "llm": {"kind": "fake-llama-unpacked"}, "projector": {"kind": "fake-mlp"}}
    with pytest.raises(SpecError, match=r"train\.packing: the LLM backbone kind 'fake-llama-unpacked' cannot keep"):
        loads_spec(spec_toml(str(tmp_path), model=model, packing=True))
    assert not loads_spec(spec_toml(str(tmp_path), model=model)).train.packing


@pytest.mark.slow
def test_compile_runs_the_blocks_compiled_with_the_eager_losses(tmp_path, toy_registry, monkeypatch):
    from prism_core.train import compilation

    compiled = []
    original = compilation.compile_blocks
    monkeypatch.setattr(compilation, "compile_blocks", lambda model: compiled.append(original(model)) or compiled[-1])
    eager = _train(tmp_path, "eager", max_steps=2, **PACKED)
    fast = _train(tmp_path, "compiled", max_steps=2, compile=True, **PACKED)
    assert compiled == [3]  # two decoder layers and the vision block
    for a, b in zip(read_metrics(eager.run_dir), read_metrics(fast.run_dir), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)


@pytest.mark.parametrize("name", ["llava-v15-align", "llava-v15-finetune"])
def test_the_llava_example_specs_say_how_to_pack_and_validate_packed(name):
    from pathlib import Path

    from prism_core.spec import load_spec

    path = Path(__file__).parents[2] / "examples" / "specs" / f"{name}.toml"
    assert "# packing = true" in path.read_text()
    assert load_spec(path, overrides=["train.packing=true"]).train.packing  # the real llama2 backbone supports it
