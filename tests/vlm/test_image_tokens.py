"""The number of image tokens is the projector's: the splice, scoring, generation, the collator's budget, the
sampler's lengths and the MFU estimate all follow a projector that shuffles, pools or resamples the patches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import pytest
import torch

from prism_core import generation
from prism_core.registry import Registry, use_registry
from prism_core.spec import ModelSpec, ProjectorSpec, SpecError, spec_field, structure
from prism_core.testing.fakes import fake_registry
from prism_core.types import IGNORE_INDEX

from .helpers import ROWS, image, make_batch
from .test_generation import IMAGES, PROMPTS, _joint_probability, _pixels

projectors = pytest.importorskip("prism_plugin_projectors.spec")

#: fake-vit-tiny makes a 4×4 grid of 16 patches; each kind makes fewer tokens of them.
KINDS = {"pixel-shuffle-mlp": ({"kind": "pixel-shuffle-mlp"}, 4),
         "pool-mlp": ({"kind": "pool-mlp", "stride": 3}, 4),
         "resampler": ({"kind": "resampler", "num_queries": 3, "num_heads": 4, "depth": 1}, 3)}


@pytest.fixture
def registry() -> Iterator[Registry]:
    extra = (projectors.PixelShuffleMLPProjectorSpec, projectors.PoolMLPProjectorSpec,
             projectors.ResamplerProjectorSpec, projectors.GeluMLPProjectorSpec)
    with use_registry(fake_registry(extra=extra)) as registry:
        yield registry


def compose(projector: Any, vision: Any = "fake-vit-tiny") -> Any:
    from prism_core.composition import compose as compose_model

    return compose_model(vision=vision, projector=projector, llm="fake-llama-tiny", seed=1)


@pytest.fixture(params=list(KINDS))
def reduced(request, registry) -> tuple[Any, int]:
    table, tokens = KINDS[request.param]
    return compose(table), tokens


def test_the_model_says_the_projectors_count(reduced) -> None:
    vlm, tokens = reduced
    assert (vlm.num_patches, vlm.num_image_tokens) == (16, tokens)
    pixels = torch.stack([vlm.image_transform(image(i)) for i in range(2)])
    with torch.no_grad():
        assert vlm.embed_images(pixels).shape == (2, tokens, vlm.llm_backbone.embed_dim)


def test_image_tokens_follow_bos_and_are_never_supervised(reduced) -> None:
    vlm, n = reduced
    batch = make_batch(vlm, ROWS)
    with torch.no_grad():
        out = vlm.forward_batch(batch)
    assert out.logits.shape[1] == batch.input_ids.shape[1] + n
    for i in (0, 2):  # image rows: BOS, n image tokens, then the text
        assert out.attention_mask[i, : n + 1].all()
        assert (out.labels[i, : n + 1] == IGNORE_INDEX).all()
        length = int(batch.attention_mask[i].sum())
        assert torch.equal(out.labels[i, n + 1 : n + length], batch.labels[i, 1:length])
        assert not out.attention_mask[i, n + length:].any()


def test_batched_generation_equals_row_by_row_and_scores_are_joint_probabilities(reduced) -> None:
    vlm, _ = reduced
    kwargs = {"max_new_tokens": 5, "do_sample": False}
    batched = generation.generate_ids(vlm, _pixels(vlm, IMAGES), PROMPTS, **kwargs)
    for i, prompt in enumerate(PROMPTS):
        alone = generation.generate_ids(vlm, _pixels(vlm, [IMAGES[i]]), [prompt], **kwargs)
        assert batched[i, : alone.shape[1]].tolist() == alone[0].tolist(), f"row {i}"
    candidates = ["True", "False", "no"]
    got = vlm.score(image(0), PROMPTS[0], candidates)
    expected = torch.softmax(torch.tensor([_joint_probability(vlm, image(0), PROMPTS[0], c) for c in candidates]), 0)
    torch.testing.assert_close(torch.tensor(got), expected, rtol=1e-4, atol=1e-5)


def test_the_flops_estimate_charges_the_projector_per_image_token(registry) -> None:
    from prism_core.train.flops import flops_model

    vlm = compose({"kind": "pixel-shuffle-mlp"})
    vlm.configure_trainable("align")
    projector = sum(p.numel() for p in vlm.projector.parameters())  # neither holds an embedding table
    vision = sum(p.numel() for p in vlm.vision_backbone.parameters())
    # 16 patches through the frozen tower (2 FLOPs per parameter), 4 image tokens through the trained projector (6).
    assert flops_model(vlm).per_image == 16 * 2 * vision + 4 * 6 * projector


def test_a_grid_the_ratio_does_not_divide_is_refused_when_the_vision_spec_cannot_say_its_patches(registry) -> None:
    from prism_core.testing.fakes import FakeVisionSpec

    @attrs.frozen(kw_only=True)
    class Unsaid(FakeVisionSpec):  # a kind that only knows its patch count once built
        kind: ClassVar[str] = "unsaid-vit"

        @property
        def num_patches(self) -> None:
            return None

    spec = structure({"vision": Unsaid(image_size=20), "projector": {"kind": "pixel-shuffle-mlp"},
                      "llm": {"kind": "fake-llama"}}, ModelSpec)  # 5×5: not caught at spec time
    from prism_core.composition import build

    with pytest.raises(SpecError) as info:
        build(spec)
    assert [path for path, _ in info.value.problems] == ["projector.ratio"]
    assert "2 does not divide the 5×5 patch grid" in str(info.value)


def test_a_projector_that_cannot_take_the_llm_width_is_a_spec_error(registry) -> None:
    with pytest.raises(SpecError, match=r"projector: num_heads \(3\) must divide the LLM width \(32\)"):
        compose({"kind": "resampler", "num_heads": 3})


@attrs.frozen(kw_only=True)
class HalvingSpec(ProjectorSpec):
    """A third-party projector whose module keeps every other patch but whose spec forgot to say so."""

    kind: ClassVar[str] = "halving"
    keep: int = spec_field(2, at_least=1, help="keep one patch in this many")

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> Any:
        class Halving(torch.nn.Linear):
            def num_tokens(self, num_patches: int) -> int:
                return num_patches // 2

            def forward(self, features: torch.Tensor) -> torch.Tensor:
                return super().forward(features[:, ::2])

        module = Halving(in_dim, out_dim)
        module.in_dim, module.out_dim = in_dim, out_dim
        return module


def test_a_module_and_spec_that_disagree_on_the_count_are_refused() -> None:
    refused = pytest.raises(SpecError, match="makes 8 image tokens of 16 patches but its spec's num_tokens says 16")
    with use_registry(fake_registry(extra=(HalvingSpec,))), refused:
        compose({"kind": "halving"})


def test_training_budgets_and_length_grouping_use_the_image_token_count(registry, tmp_path) -> None:
    from prism_plugin_single.spec import SingleSpec

    from prism_core.spec import loads_spec
    from prism_core.train.loop import build_parts
    from tests.train.toy_run import ToyDataSpec, spec_toml

    for spec_class in (ToyDataSpec, SingleSpec):
        registry.register(spec_class, distribution="tests")
    model = {"vision": {"kind": "fake-vit"}, "llm": {"kind": "fake-llama"}, "projector": {"kind": "pixel-shuffle-mlp"}}
    spec = loads_spec(spec_toml(str(tmp_path), model=model, max_length=10))
    parts = build_parts(spec)
    assert parts.image_tokens == parts.collator.image_tokens == parts.model.num_image_tokens == 4
    example = next(parts.dataset[i] for i in range(len(parts.dataset)) if parts.dataset[i].has_image)
    ids, _ = parts.collator._truncate(example)
    assert len(ids) == min(len(example.input_ids), 10 - 4)
    # `prism data check` budgets the same way, from the spec alone.
    from prism_core.data.check import build_for_check

    _, collator, notes = build_for_check(spec)
    assert collator.image_tokens == 4 and not notes
