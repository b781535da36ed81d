from __future__ import annotations

import pytest
import torch
from prism_plugin_projectors.spec import (
    FusedGeluMLPProjectorSpec,
    GeluMLPProjectorSpec,
    LinearProjectorSpec,
    PixelShuffleMLPProjectorSpec,
    PoolMLPProjectorSpec,
    ResamplerProjectorSpec,
)

from prism_core.spec import ProjectorSpec, SpecError, loads_spec
from prism_core.testing.conformance import ProjectorConformance


class TestLinearConformance(ProjectorConformance):
    spec = LinearProjectorSpec.from_preset("linear")


class TestGeluMLPConformance(ProjectorConformance):
    spec = GeluMLPProjectorSpec.from_preset("gelu-mlp")


class TestFusedGeluMLPConformance(ProjectorConformance):
    spec = FusedGeluMLPProjectorSpec.from_preset("fused-gelu-mlp")


class TestPixelShuffleMLPConformance(ProjectorConformance):
    spec = PixelShuffleMLPProjectorSpec.from_preset("pixel-shuffle-mlp")


class TestPaddedPixelShuffleMLPConformance(ProjectorConformance):
    spec = PixelShuffleMLPProjectorSpec.from_preset("pixel-shuffle-mlp", ratio=3, pad_grid=True)


class TestPoolMLPConformance(ProjectorConformance):
    spec = PoolMLPProjectorSpec.from_preset("pool-mlp")


class TestResamplerConformance(ProjectorConformance):
    spec = ResamplerProjectorSpec.from_preset("resampler", num_queries=6, num_heads=4, depth=1)


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def test_state_dict_keys_and_shapes_match_the_original_layout() -> None:
    # DINOSigLIP (2176) + 7B (4096) is the inventory's example: 2176 → 8704 → 4096 → 4096.
    assert _shapes(FusedGeluMLPProjectorSpec().build(2176 // 64, 4096 // 64)) == {
        "projector.0.weight": (136, 34), "projector.0.bias": (136,),
        "projector.2.weight": (64, 136), "projector.2.bias": (64,),
        "projector.4.weight": (64, 64), "projector.4.bias": (64,),
    }
    assert _shapes(GeluMLPProjectorSpec().build(12, 20)) == {
        "projector.0.weight": (20, 12), "projector.0.bias": (20,),
        "projector.2.weight": (20, 20), "projector.2.bias": (20,),
    }
    assert _shapes(LinearProjectorSpec().build(12, 20)) == {"projector.weight": (20, 12), "projector.bias": (20,)}
    assert _shapes(LinearProjectorSpec(bias=False).build(12, 20)) == {"projector.weight": (20, 12)}


def test_activations_are_exact_gelu() -> None:
    projector = GeluMLPProjectorSpec().build(4, 6)
    x = torch.randn(3, 4)
    first, second = projector.projector[0], projector.projector[2]
    expected = second(torch.nn.functional.gelu(first(x), approximate="none"))
    torch.testing.assert_close(projector(x), expected, rtol=0, atol=0)


def test_building_does_not_disturb_the_global_rng() -> None:
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    GeluMLPProjectorSpec().build(8, 8, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_bad_hidden_factor_is_reported_with_its_path() -> None:
    with pytest.raises(SpecError, match="hidden_factor: must be >= 1"):
        loads_spec('kind = "fused-gelu-mlp"\nhidden_factor = 0', cls=ProjectorSpec)


def test_readable_error_for_bad_widths() -> None:
    with pytest.raises(ValueError, match="in_dim=0"):
        LinearProjectorSpec().build(0, 4)


# -- projectors that change the number of image tokens ---------------------------------------------------------------
def test_pixel_shuffle_concatenates_each_block_of_patches_row_by_row() -> None:
    projector = PixelShuffleMLPProjectorSpec(ratio=2).build(3, 5)
    grid = torch.randn(1, 4, 4, 3)  # rows, columns, width
    first = projector.projector[0]
    seen = []
    first.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    projector(grid.flatten(1, 2))
    (tokens,) = seen
    assert tokens.shape == (1, 4, 12)
    # Token 1 is the block of rows 0-1, columns 2-3: patches (0,2) (0,3) (1,2) (1,3), each 3 wide.
    expected = torch.cat([grid[0, 0, 2], grid[0, 0, 3], grid[0, 1, 2], grid[0, 1, 3]])
    assert torch.equal(tokens[0, 1], expected)
    assert torch.equal(tokens[0, 2], torch.cat([grid[0, 2, 0], grid[0, 2, 1], grid[0, 3, 0], grid[0, 3, 1]]))


def test_pixel_shuffle_pads_an_undivided_grid_with_zero_patches_only_when_asked() -> None:
    padded = PixelShuffleMLPProjectorSpec(ratio=2, pad_grid=True).build(2, 4)
    seen = []
    padded.projector[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    grid = torch.randn(1, 5, 5, 2)
    assert padded(grid.flatten(1, 2)).shape == (1, 9, 4)
    last = seen[0][0, 8]  # the corner block: patch (4,4), then three zero patches
    assert torch.equal(last, torch.cat([grid[0, 4, 4], torch.zeros(6)]))
    with pytest.raises(ValueError, match="2 does not divide the 5×5 patch grid"):
        PixelShuffleMLPProjectorSpec(ratio=2).build(2, 4)(grid.flatten(1, 2))


def test_a_ratio_that_does_not_divide_the_grid_is_a_spec_error_with_its_dotted_path() -> None:
    # A 5×5 grid, like the quickstart's (siglip-tiny at 40 px in 8 px patches).
    model = ('[model]\nvision = { kind = "fake-vit", image_size = 20, patch_size = 4 }\nllm = { kind = "fake-llama" }\n'
             'projector = { kind = "pixel-shuffle-mlp", ratio = 2 }\n')
    from prism_core.registry import use_registry
    from prism_core.testing.fakes import fake_registry

    with use_registry(fake_registry(extra=(PixelShuffleMLPProjectorSpec,))):
        with pytest.raises(SpecError) as info:
            loads_spec(f"schema = 1\n{model}")
        assert dict(info.value.problems) == {"model.projector.ratio": (
            "2 does not divide the 5×5 patch grid of the vision backbone: choose a ratio that divides 5, or "
            "pad_grid = true (pads the grid to 6×6: 9 tokens)")}
        assert loads_spec(f"schema = 1\n{model}", ["model.projector.pad_grid=true"]).model.projector.pad_grid
        assert loads_spec(f"schema = 1\n{model}", ["model.projector.ratio=5"]).model.projector.num_tokens(25) == 1


def test_pooling_averages_each_window_and_a_partial_window_over_the_patches_it_covers() -> None:
    projector = PoolMLPProjectorSpec(stride=2, positional_conv=False).build(1, 3)
    seen = []
    projector.projector[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    grid = torch.arange(25.0).view(1, 25, 1)  # a 5×5 grid holding 0..24 row by row
    assert projector(grid).shape == (1, 9, 3)
    pooled = seen[0][0, :, 0]
    assert pooled.tolist() == [3.0, 5.0, 6.5, 13.0, 15.0, 16.5, 20.5, 22.5, 24.0]


def test_pool_positional_conv_adds_a_depthwise_convolution_of_the_token_grid() -> None:
    projector = PoolMLPProjectorSpec(stride=2).build(4, 6)
    assert projector.positional.groups == 6 and projector.positional.kernel_size == (3, 3)
    features = torch.randn(2, 16, 4)
    without = PoolMLPProjectorSpec(stride=2, positional_conv=False).build(4, 6)
    without.load_state_dict({k: v for k, v in projector.state_dict().items() if k.startswith("projector.")})
    tokens = without(features)
    grid = tokens.transpose(1, 2).unflatten(2, (2, 2))
    expected = tokens + projector.positional(grid).flatten(2).transpose(1, 2)
    torch.testing.assert_close(projector(features), expected)


def test_resampler_makes_its_query_count_and_each_image_only_sees_its_own_patches() -> None:
    projector = ResamplerProjectorSpec(num_queries=3, num_heads=2, depth=2).build(8, 16, seed=2)
    features = torch.randn(4, 9, 8)
    out = projector(features)
    assert out.shape == (4, 3, 16) and projector.num_tokens(9) == projector.num_tokens(400) == 3
    torch.testing.assert_close(projector(features[2:3]), out[2:3])  # batch rows do not mix
    assert not torch.allclose(out[0], out[1])  # and the output depends on the patches
    # It takes any number of patches, square or not.
    assert projector(torch.randn(1, 7, 8)).shape == (1, 3, 16)


def test_resampler_heads_must_divide_the_llm_width() -> None:
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide the LLM width \(16\)"):
        ResamplerProjectorSpec(num_heads=3).build(8, 16)


def test_token_reducing_projectors_keep_the_gelu_mlp_layer_names() -> None:
    # The MLP of pixel-shuffle-mlp and pool-mlp is gelu-mlp's: its input is ratio² × the vision width wide.
    assert _shapes(PixelShuffleMLPProjectorSpec(ratio=2).build(12, 20)) == {
        "projector.0.weight": (20, 48), "projector.0.bias": (20,),
        "projector.2.weight": (20, 20), "projector.2.bias": (20,),
    }
    assert set(_shapes(PoolMLPProjectorSpec().build(12, 20))) == {
        "projector.0.weight", "projector.0.bias", "projector.2.weight", "projector.2.bias",
        "positional.weight", "positional.bias"}


@pytest.mark.parametrize("spec", [PixelShuffleMLPProjectorSpec(), PoolMLPProjectorSpec(),
                                  ResamplerProjectorSpec(num_heads=4)], ids=lambda s: s.kind)
def test_token_reducing_projectors_train(spec: ProjectorSpec) -> None:
    projector = spec.build(6, 8, seed=1)
    features, target = torch.randn(4, 16, 6), torch.randn(4, spec.num_tokens(16), 8)
    optimizer = torch.optim.Adam(projector.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(projector(features), target)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in projector.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
