"""Meta-device construction and materialisation (``prism_core.materialize``) on the core fakes: what each value comes
from, that the weights of a load are the file's own pages, and that components without the hooks still work."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import attrs
import pytest
import torch
from torch import nn

from prism_core import load, save
from prism_core.composition import build
from prism_core.io import ModelFormatError
from prism_core.materialize import StateMismatchError, UninitializableError, materialize
from prism_core.registry import use_registry
from prism_core.spec import ModelSpec, structure
from prism_core.testing._fake_modules import FakeVisionBackbone
from prism_core.testing.fakes import FakeVisionSpec, fake_registry


def spec(vision: str = "fake-vit", **fields: Any) -> ModelSpec:
    table = {"vision": {"kind": vision}, "projector": {"kind": "fake-mlp"}, "llm": {"kind": "fake-llama"}, "seed": 1}
    return structure({**table, **fields}, ModelSpec)


def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def assert_equal_models(a: nn.Module, b: nn.Module) -> None:
    ours, theirs = tensors(a), tensors(b)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items())


@pytest.mark.parametrize("vision", ["fake-vit", "fake-fused"])
def test_a_meta_build_materialised_equals_an_eager_build(fakes, vision):
    meta = build(spec(vision), device="meta")
    assert all(t.is_meta for t in tensors(meta).values())
    assert meta.tokenizer is not None and meta.prompt_format is not None  # usable for data before any weight exists
    assert_equal_models(materialize(meta), build(spec(vision)))
    different = build(spec(vision, seed=2))
    assert not torch.equal(different.projector.projector[0].weight, meta.projector.projector[0].weight)


def test_materialising_inside_a_meta_context_still_makes_real_tensors(fakes):
    with torch.device("meta"):
        vlm = build(spec())
    assert not any(t.is_meta for t in tensors(vlm).values())


def test_load_assigns_the_files_pages_and_never_initialises_a_weight(fakes, tmp_path, random_inits):
    saved = save(build(spec()), tmp_path / "model")
    random_inits.clear()
    loaded = load(saved)
    # Only parameter-free modules (the rotary embedding's computed frequencies) were initialised.
    assert random_inits and all(not m._parameters for m in random_inits)
    assert_equal_models(loaded, build(spec()))
    if sys.platform.startswith("linux"):
        weights = str(saved / "model.safetensors")
        assert all(_mapped_file(p) == weights for p in loaded.parameters())


def _mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose mapping holds ``tensor``'s memory, from /proc/self/maps (None: anonymous memory)."""
    address = tensor.untyped_storage().data_ptr()
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return fields[5].strip() if len(fields) == 6 and fields[5].startswith("/") else None
    return None


def test_a_warm_start_takes_every_weight_from_the_saved_model(fakes, tmp_path, random_inits):
    source = build(spec(seed=5))
    saved = save(source, tmp_path / "aligned")
    random_inits.clear()
    warm = build(spec(init_from=str(saved)))
    assert random_inits and all(not m._parameters for m in random_inits)
    assert_equal_models(warm, source)


def test_a_warm_start_that_does_not_fit_names_the_file(fakes, tmp_path):
    saved = save(build(spec()), tmp_path / "fused")
    with pytest.raises(ModelFormatError, match=r"fused/model\.safetensors: weights do not match.*missing"):
        build(spec("fake-fused", init_from=str(saved)))


# -- components built by plugins that predate the hooks -------------------------------------------------------------
class HooklessVisionBackbone(FakeVisionBackbone):
    init_module = None  # a plugin written before materialisation existed: no hook


@attrs.frozen(kw_only=True)
class HooklessVisionSpec(FakeVisionSpec):
    kind: ClassVar[str] = "hookless-vit"
    presets: ClassVar[dict[str, dict]] = {}
    weights: str | None = None

    def build(self) -> Any:
        module = HooklessVisionBackbone(self.image_size, self.patch_size, self.embed_dim)
        if self.weights:  # on meta this would be silently dropped: such a component must be built eagerly
            from safetensors.torch import load_file

            module.load_state_dict(load_file(self.weights))
        return module


@attrs.frozen(kw_only=True)
class MetaHostileVisionSpec(FakeVisionSpec):
    kind: ClassVar[str] = "meta-hostile-vit"
    presets: ClassVar[dict[str, dict]] = {}

    def build(self) -> Any:
        module = FakeVisionBackbone(self.image_size, self.patch_size, self.embed_dim)
        module.scale = float(module.tower.pos_embed.detach().abs().max())  # reads data: impossible on meta
        return module


@pytest.fixture
def legacy():
    with use_registry(fake_registry(extra=(HooklessVisionSpec, MetaHostileVisionSpec))) as registry:
        yield registry


def test_components_without_hooks_are_built_eagerly_and_keep_their_weights(legacy, tmp_path):
    from safetensors.torch import save_file

    reference = FakeVisionBackbone(16, 4, 24)
    file = tmp_path / "vision.safetensors"
    save_file(reference.state_dict(), str(file))
    vlm = build(structure({**_table(spec()), "vision": {"kind": "hookless-vit", "weights": str(file)}}, ModelSpec),
                device="meta")
    assert not any(t.is_meta for t in vlm.vision_backbone.parameters())  # eager: its weights were read
    assert all(t.is_meta for t in vlm.llm_backbone.parameters())  # the rest still waits for its device
    materialize(vlm)
    assert_equal_models(vlm.vision_backbone, reference)
    hostile = build(structure({**_table(spec()), "vision": {"kind": "meta-hostile-vit"}}, ModelSpec))
    assert hostile.vision_backbone.scale > 0


def test_a_warm_start_reaches_eagerly_built_components_too(legacy, tmp_path):
    table = {**_table(spec()), "vision": {"kind": "hookless-vit"}}
    source = build(structure({**table, "seed": 4}, ModelSpec))
    saved = save(source, tmp_path / "aligned")
    warm = build(structure({**table, "init_from": str(saved)}, ModelSpec))
    assert_equal_models(warm, source)


def _table(model_spec: ModelSpec) -> dict[str, Any]:
    return {"vision": {"kind": model_spec.vision.kind}, "projector": {"kind": model_spec.projector.kind},
            "llm": {"kind": model_spec.llm.kind}, "seed": model_spec.seed}


# -- the rules, on plain modules --------------------------------------------------------------------------------------
class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.ones(4), persistent=False)

    def init_module(self, module: nn.Module, name: str) -> None:
        if module is self:
            self.scale.fill_(2.0)
        else:
            module.reset_parameters()


def test_tied_weights_stay_one_parameter_and_buffers_are_filled():
    with torch.device("meta"):
        model = Tied()
    materialize(model)
    assert model.head.weight is model.embed.weight and torch.equal(model.scale, torch.full((4,), 2.0))


def test_meta_tensors_nothing_can_initialise_are_named():
    with torch.device("meta"):
        bare = nn.Sequential(nn.Linear(2, 3))
    with pytest.raises(UninitializableError, match=r"0\.weight.*init_module"):
        materialize(bare)


def test_a_hook_that_forgets_a_tensor_is_caught():
    class Forgetful(Tied):
        def init_module(self, module: nn.Module, name: str) -> None:
            pass

    with torch.device("meta"):
        model = Forgetful()
    with pytest.raises(UninitializableError, match=r"Forgetful\.init_module left scale uninitialised"):
        materialize(model)


def test_a_state_must_fit_exactly_when_strict():
    with torch.device("meta"):
        model = Tied()
    with pytest.raises(StateMismatchError, match=r"missing embed\.weight; unexpected other"):
        materialize(model, state={"other": torch.zeros(1)}, strict=True)
    with pytest.raises(StateMismatchError, match=r"embed\.weight \(3, 4\) vs the model's \(10, 4\)"):
        materialize(model, state={"head.weight": torch.zeros(3, 4)})
    materialize(model, state={"head.weight": torch.ones(10, 4)}, strict=True)  # either name of a tied weight
    assert torch.equal(model.embed.weight, torch.ones(10, 4)) and model.head.weight is model.embed.weight


def test_an_explicit_state_is_assigned_without_a_copy_and_copied_into_real_tensors():
    with torch.device("meta"):
        model = Tied()
    weight = torch.randn(10, 4)
    materialize(model, state={"embed.weight": weight})
    assert model.embed.weight.data_ptr() == weight.data_ptr()  # assigned, not copied
    again = torch.randn(10, 4)
    materialize(model, state={"embed.weight": again})
    assert model.embed.weight.data_ptr() == weight.data_ptr() and torch.equal(model.embed.weight, again)


def test_initial_state_is_read_only_for_what_no_given_state_covers():
    class Pretrained(Tied):
        def initial_state(self) -> dict[str, torch.Tensor]:
            raise AssertionError("the pretrained files were read although the given state covers every weight")

    with torch.device("meta"):
        model = Pretrained()
    materialize(model, state={"embed.weight": torch.ones(10, 4)})  # the computed buffer is not a reason to read
    assert torch.equal(model.scale, torch.full((4,), 2.0))
