from __future__ import annotations

import attrs
import pytest
import torch
from PIL import Image
from prism_plugin_dinov2.spec import Dinov2Spec
from prism_plugin_fusion.spec import FusedSpec
from prism_plugin_siglip.spec import SiglipSpec

from prism_core.registry import get_registry
from prism_core.spec import SpecError, VisionBackboneSpec, structure
from prism_core.types import Role

conformance = pytest.importorskip("prism_core.testing.conformance")

ORIGINAL = {  # id → (patches, width, member keys), as in the original
    "dinoclip-vit-l-336px": (576, 2048, ("dino", "clip")),
    "dinosiglip-vit-so-224px": (256, 2176, ("dino", "siglip")),
    "dinosiglip-vit-so-384px": (729, 2176, ("dino", "siglip")),
}
ALL_ORIGINAL_IDS = {
    "clip-vit-b", "clip-vit-l", "clip-vit-l-336px", "siglip-vit-b16-224px", "siglip-vit-b16-256px",
    "siglip-vit-b16-384px", "siglip-vit-so400m", "siglip-vit-so400m-384px", "dinov2-vit-l", "in1k-vit-l",
    "dinoclip-vit-l-336px", "dinosiglip-vit-so-224px", "dinosiglip-vit-so-384px",
}


class TestFusedConformance(conformance.VisionBackboneConformance):
    spec = FusedSpec.from_preset("dinosiglip-tiny")


@attrs.frozen(kw_only=True)
class Holder:
    vision: VisionBackboneSpec


def fused(members: list[dict], **fields) -> FusedSpec:
    return structure({"vision": {"kind": "fused", "members": members, **fields}}, Holder).vision


def problems_of(members: list[dict], **fields) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as error:
        fused(members, **fields)
    return error.value.problems


@pytest.mark.parametrize("preset", sorted(ORIGINAL))
def test_original_presets_build_on_meta_with_the_original_shapes(preset: str) -> None:
    spec = FusedSpec.from_preset(preset)
    with torch.device("meta"):
        backbone = spec.build()
    patches, width, keys = ORIGINAL[preset]
    assert (backbone.num_patches, backbone.embed_dim, spec.num_patches) == (patches, width, patches)
    assert tuple(backbone.members) == keys == spec.member_keys()


def test_every_original_id_is_a_preset_and_preset_names_are_unique_across_vision_kinds() -> None:
    seen: dict[str, str] = {}
    for info in get_registry().kinds(Role.VISION_BACKBONE):
        for name in get_registry().resolve(Role.VISION_BACKBONE, info.kind).presets:
            assert name not in seen, f"preset {name!r} is defined by both {seen[name]!r} and {info.kind!r}"
            seen[name] = info.kind
    assert set(seen) >= ALL_ORIGINAL_IDS
    assert {"siglip-tiny", "dinov2-tiny", "clip-tiny", "vit-tiny", "dinosiglip-tiny"} <= set(seen)


def test_fused_features_are_the_members_features_concatenated() -> None:
    backbone = FusedSpec.from_preset("dinosiglip-tiny").build()
    dino = Dinov2Spec.from_preset("dinov2-tiny").build()  # same seed, so the same weights as the member
    siglip = SiglipSpec.from_preset("siglip-tiny").build()
    pixels = backbone.image_transform(Image.new("RGB", (48, 30), (250, 120, 0)))
    assert set(pixels) == {"dino", "siglip"}
    # Each member keeps its own normalisation: ImageNet statistics for DINOv2, 0.5 for SigLIP.
    assert not torch.equal(pixels["dino"], pixels["siglip"])
    batch = {key: value.unsqueeze(0) for key, value in pixels.items()}
    with torch.no_grad():
        expected = torch.cat([dino(batch["dino"]), siglip(batch["siglip"])], dim=2)
        torch.testing.assert_close(backbone(batch), expected, rtol=0, atol=0)
    assert backbone.embed_dim == 64 + 128


def test_unequal_patch_counts_are_a_spec_error() -> None:
    problems = problems_of([{"kind": "dinov2", "preset": "dinov2-tiny"},
                            {"kind": "siglip", "preset": "siglip-tiny", "image_size": 48}])
    assert [path for path, _ in problems] == ["vision.members"]
    assert "members[0] (dino) 16, members[1] (siglip) 36" in problems[0][1]


def test_member_problems_carry_their_dotted_path() -> None:
    problems = problems_of([{"kind": "dinov2", "preset": "dinov2-tiny", "image_size": 30},
                            {"kind": "siglip", "preset": "siglip-tiny"}])
    assert "vision.members[0].image_size" in [path for path, _ in problems]


def test_keys_must_be_unique_and_a_single_member_is_not_a_fusion() -> None:
    tiny = {"kind": "siglip", "preset": "siglip-tiny"}
    assert problems_of([tiny, tiny])[0][0] == "vision.members"
    ok = fused([tiny, {**tiny, "seed": 1}], keys=["a", "b"])
    assert tuple(ok.build().image_transform(Image.new("L", (9, 9)))) == ("a", "b")
    assert problems_of([tiny], keys=["a"])[0] == ("vision.members", "need at least two member backbones, got 1")
    assert ("vision.keys", "has 1 keys for 2 members") in problems_of([tiny, {**tiny, "seed": 1}], keys=["a"])


def test_resize_applies_to_every_member() -> None:
    spec = FusedSpec.from_preset("dinosiglip-tiny", resize="letterbox")
    transforms = spec.build().image_transform.transforms
    assert {t.resize for t in transforms.values()} == {"letterbox"}
    assert transforms["dino"].fill == (123, 116, 103) and transforms["siglip"].fill == (127, 127, 127)


def test_forward_names_missing_member_pixels_and_freezing_reaches_every_member() -> None:
    backbone = FusedSpec.from_preset("dinosiglip-tiny").build()
    with pytest.raises(KeyError, match="siglip"):
        backbone({"dino": torch.zeros(1, 3, 32, 32)})
    backbone.set_trainable(False)
    backbone.train()
    assert not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())
