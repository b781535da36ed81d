from __future__ import annotations

import pytest
import torch
from prism_plugin_projectors.spec import FusedGeluMLPProjectorSpec, GeluMLPProjectorSpec, LinearProjectorSpec

from prism_core.spec import ProjectorSpec, SpecError, loads_spec
from prism_core.testing.conformance import ProjectorConformance


class TestLinearConformance(ProjectorConformance):
    spec = LinearProjectorSpec.from_preset("linear")


class TestGeluMLPConformance(ProjectorConformance):
    spec = GeluMLPProjectorSpec.from_preset("gelu-mlp")


class TestFusedGeluMLPConformance(ProjectorConformance):
    spec = FusedGeluMLPProjectorSpec.from_preset("fused-gelu-mlp")


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
