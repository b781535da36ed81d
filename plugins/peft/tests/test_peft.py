"""The lora, dora and qlora kinds on a model of the core fakes: conformance, which layers are adapted, bad target
patterns, peft's own loader on the saved LLM adapter, and QLoRA's spec-time checks. The 4-bit tests need the
``qlora`` extra (bitsandbytes): skipped without it, failed without it under PRISM_REQUIRE_BITSANDBYTES=1 (the
``peft_qlora`` nox session)."""

from __future__ import annotations

import os
from typing import ClassVar

import attrs
import pytest
import torch
from prism_plugin_peft.spec import DoRASpec, LoRASpec, QLoRASpec

from prism_core.spec import ModelAdapterSpec, ModelSpec, SpecError, TrainStrategySpec, loads_spec, structure
from prism_core.testing.conformance import ModelAdapterConformance

#: Adapt the fake LLM's attention and MLP projections; train the projector in full.
TARGETS = {"target": ("llm.*layers.*",), "r": 4, "alpha": 8.0}


def _require_bitsandbytes() -> None:
    from prism_plugin_peft.quantize import backend_problem

    problem = backend_problem()
    if problem is not None:
        if os.environ.get("PRISM_REQUIRE_BITSANDBYTES"):
            pytest.fail(f"PRISM_REQUIRE_BITSANDBYTES is set but {problem}")
        pytest.skip(problem)


class TestLoRAConformance(ModelAdapterConformance):
    spec = LoRASpec(**TARGETS)


class TestDoRAConformance(ModelAdapterConformance):
    spec = DoRASpec(**TARGETS)


class TestQLoRAConformance(ModelAdapterConformance):
    spec = QLoRASpec(**TARGETS, compute_dtype="fp32")
    exact_base = False  # the base computes with 4-bit weights

    @pytest.fixture(autouse=True)
    def _bitsandbytes(self) -> None:
        # Every check needs it: without bitsandbytes even the presets are (rightly) refused at spec time.
        _require_bitsandbytes()


@attrs.frozen(kw_only=True)
class SingleStub(TrainStrategySpec):
    """Run specs name a strategy kind; this plugin's tests run none (prism-plugin-single is not a dependency)."""

    kind: ClassVar[str] = "single"


@attrs.frozen(kw_only=True)
class FSDPStub(TrainStrategySpec):
    kind: ClassVar[str] = "fsdp"


@pytest.fixture
def fakes():
    from prism_core.registry import use_registry
    from prism_core.testing.fakes import fake_registry

    with use_registry(fake_registry(extra=(LoRASpec, DoRASpec, QLoRASpec, SingleStub, FSDPStub))) as registry:
        yield registry


def _model(device: str | None = None):
    from prism_core.composition import build

    return build(structure({"vision": {"kind": "fake-vit"}, "llm": {"kind": "fake-llama"},
                            "projector": {"kind": "fake-mlp"}}, ModelSpec), device=device)


def _adapter_spec(**fields) -> ModelAdapterSpec:
    return structure({"kind": "lora", **fields}, ModelAdapterSpec, "test")


def test_exactly_the_named_layers_are_adapted_and_everything_else_is_frozen(fakes):
    from peft.tuners.lora import LoraLayer

    from prism_core.adapters import adapt

    vlm = _model("meta")
    spec = _adapter_spec(target=["llm.*layers.0.self_attn.q_proj", "llm.*layers.1.mlp.down_proj.weight",
                                 "vision.*mlp.0"], fully_trained=["projector.*"])
    adapt(vlm, spec)
    adapted = {name for name, module in vlm.named_modules() if isinstance(module, LoraLayer)}
    assert adapted == {"llm_backbone.llm.model.layers.0.self_attn.q_proj",
                       "llm_backbone.llm.model.layers.1.mlp.down_proj", "vision_backbone.tower.block.mlp.0"}
    trainable = {name for name, p in vlm.named_parameters() if p.requires_grad}
    assert {n for n in trainable if not n.startswith("projector.")} == {
        f"{layer}.{part}.default.weight" for layer in adapted for part in ("lora_A", "lora_B")}
    assert {n for n, _ in vlm.projector.named_parameters(prefix="projector")} <= trainable
    assert vlm.llm_backbone.training and vlm.projector.training  # they train: the adapter's dropout is on
    assert not any(p.requires_grad for n, p in vlm.named_parameters() if "base_layer" in n)


def test_a_pattern_that_names_nothing_is_a_spec_error_with_its_path_and_the_closest_names(fakes):
    from prism_core.adapters import adapt

    spec = _adapter_spec(target=["llm.*layers.*", "llm.*q_prj"], fully_trained=["projecter.*"])
    with pytest.raises(SpecError) as info:
        adapt(_model("meta"), spec)
    problems = dict(info.value.problems)
    assert "'llm.*q_prj' matches no parameter or module" in problems["train.adapter.target[1]"]
    assert "q_proj.weight" in problems["train.adapter.target[1]"]  # the closest names
    assert "projector." in problems["train.adapter.fully_trained[0]"]
    assert "train.adapter.target[0]" not in problems


def test_a_pattern_that_names_only_layers_lora_cannot_adapt_says_so(fakes):
    from prism_core.adapters import adapt

    with pytest.raises(SpecError, match=r"target\[0\].*names no layer a 'lora' adapter can adapt"):
        adapt(_model("meta"), _adapter_spec(target=["llm.*layernorm*"]))
    with pytest.raises(SpecError, match=r"fully_trained\[0\].*adapted or trained in full"):
        adapt(_model("meta"), _adapter_spec(target=["llm.*q_proj"], fully_trained=["llm.*q_proj.weight"]))


def test_peft_loads_the_saved_llm_adapter_onto_the_base_llm(fakes, tmp_path):
    from peft import PeftModel

    import prism_core
    from prism_core.adapters import adapt

    vlm = _model()
    base_llm_state = {k: v.clone() for k, v in vlm.llm_backbone.llm.state_dict().items()}
    adapt(vlm, _adapter_spec(target=["llm.*layers.*"], r=4), seed=1)
    with torch.no_grad():
        for name, param in vlm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    prism_core.save(vlm, tmp_path / "adapted")
    fresh = _model().llm_backbone.llm
    fresh.load_state_dict(base_llm_state)
    peft_llm = PeftModel.from_pretrained(fresh, tmp_path / "adapted").eval()
    vlm.eval()
    embeds = torch.randn(2, 5, 32)
    with torch.no_grad():
        ours = vlm.llm_backbone.llm(inputs_embeds=embeds).logits
        theirs = peft_llm(inputs_embeds=embeds).logits
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_loading_refuses_a_damaged_adapter_file_naming_it(fakes, tmp_path):
    import prism_core
    from prism_core.adapters import adapt
    from prism_core.io import ModelFormatError

    vlm = _model()
    adapt(vlm, _adapter_spec(target=["llm.*layers.*"]))
    prism_core.save(vlm, tmp_path / "adapted")
    (tmp_path / "adapted" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelFormatError, match=r"adapter_model\.safetensors"):
        prism_core.load(tmp_path / "adapted")


def test_kind_fields_are_checked_at_spec_time(fakes):
    problems = dict(LoRASpec(dropout=1.0).problems())
    assert "[0, 1)" in problems["dropout"]
    with pytest.raises(SpecError, match=r"train.adapter.r: must be >= 1"):
        loads_spec(_run_spec('kind = "lora"\nr = 0'))


def test_the_llava_preset_is_llavas_lora_recipe(fakes):
    spec = LoRASpec.from_preset("llava-v15")
    assert (spec.r, spec.alpha, spec.dropout, spec.fully_trained_learning_rate) == (128, 256, 0.05, 2e-5)
    assert spec.target == ("llm.*",) and spec.exclude == ("*lm_head*",) and spec.fully_trained == ("projector.*",)


def _run_spec(adapter: str, strategy: str = "single") -> str:
    return ('schema = 1\n[model]\nvision = { kind = "fake-vit" }\nllm = { kind = "fake-llama" }\n'
            f'projector = {{ kind = "fake-mlp" }}\n[train]\nstrategy = {{ kind = "{strategy}" }}\n'
            f"[train.adapter]\n{adapter}\n")


def test_qlora_is_refused_at_spec_time_where_bitsandbytes_cannot_run(fakes, monkeypatch):
    from prism_plugin_peft import quantize

    def broken(device: str) -> None:
        raise RuntimeError("no kernel for this CPU")

    quantize.backend_problem.cache_clear()
    monkeypatch.setattr(quantize, "_probe", broken)
    monkeypatch.setattr(quantize.importlib.util, "find_spec", lambda name: object())
    try:
        with pytest.raises(SpecError) as info:
            loads_spec(_run_spec('kind = "qlora"'), source="spec.toml")
        message = dict(info.value.problems)["train.adapter.kind"]
        assert "bitsandbytes cannot run 4-bit layers" in message and "no kernel for this CPU" in message
        monkeypatch.setattr(quantize.importlib.util, "find_spec", lambda name: None)
        quantize.backend_problem.cache_clear()
        with pytest.raises(SpecError, match=r"pip install 'prism-plugin-peft\[qlora\]'"):
            loads_spec(_run_spec('kind = "qlora"'))
    finally:
        quantize.backend_problem.cache_clear()


def test_qlora_with_a_sharded_strategy_is_a_spec_error(fakes, monkeypatch):
    from prism_plugin_peft import quantize

    monkeypatch.setattr(quantize, "backend_problem", lambda: None)
    with pytest.raises(SpecError, match=r"train.strategy.kind: qlora .* use 'single' or 'ddp'"):
        loads_spec(_run_spec('kind = "qlora"', strategy="fsdp"))


def test_qlora_quantises_only_the_adapted_layers(fakes):
    _require_bitsandbytes()
    import bitsandbytes as bnb

    from prism_core.adapters import adapt

    vlm = _model("meta")
    adapt(vlm, structure({"kind": "qlora", "target": ["llm.*mlp.*"], "compute_dtype": "fp32"}, ModelAdapterSpec))
    quantized = {name for name, m in vlm.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert quantized == {f"llm_backbone.llm.model.layers.{i}.mlp.{p}.base_layer" for i in (0, 1)
                         for p in ("gate_proj", "up_proj", "down_proj")}
    assert type(vlm.llm_backbone.llm.model.layers[0].self_attn.q_proj) is torch.nn.Linear
