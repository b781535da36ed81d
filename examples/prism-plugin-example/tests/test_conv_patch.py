"""The example plugin passes prism's conformance suite and is usable from a spec, found only through pip."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from prism_plugin_example.spec import ConvPatchSpec

from prism_core.spec import SpecError, loads_spec
from prism_core.testing.conformance import VisionBackboneConformance


class TestConvPatchConformance(VisionBackboneConformance):
    spec = ConvPatchSpec.from_preset("conv-patch-tiny")


SPEC = """\
schema = 1
[model]
vision = {{ kind = "conv-patch", preset = "conv-patch-tiny", image_size = {size} }}
projector = {{ kind = "gelu-mlp" }}
llm = {{ kind = "llama2", preset = "llama-tiny" }}
"""


def test_a_spec_naming_the_kind_resolves_it_through_its_entry_point():
    spec = loads_spec(SPEC.format(size=64))
    assert spec.model.vision == ConvPatchSpec(preset="conv-patch-tiny", image_size=64, patch_size=8, width=32,
                                              depth=1)


def test_a_bad_image_size_is_reported_at_its_dotted_path():
    with pytest.raises(SpecError) as info:
        loads_spec(SPEC.format(size=60))
    assert dict(info.value.problems) == {"model.vision.image_size": "must be a multiple of patch_size (8), got 60"}


def test_weights_load_from_a_local_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    reference = ConvPatchSpec.from_preset("conv-patch-tiny").build()
    save_file(reference.state_dict(), tmp_path / "w.safetensors")
    loaded = ConvPatchSpec.from_preset("conv-patch-tiny", weights=str(tmp_path / "w.safetensors")).build()
    pixels = reference.image_transform(Image.new("L", (5, 9), 128)).unsqueeze(0)
    assert torch.equal(reference(pixels), loaded(pixels))


def test_composes_into_a_vlm_that_trains_a_step():
    import prism_core

    spec = loads_spec(SPEC.format(size=32))
    vlm = prism_core.build(spec.model)
    tokenizer = vlm.llm_backbone.tokenizer
    ids = torch.tensor([tokenizer("What colour is the shape? red").input_ids])
    labels = ids.clone()
    labels[:, :-2] = -100
    pixels = vlm.vision_backbone.image_transform(Image.new("RGB", (32, 32), "red")).unsqueeze(0)
    out = vlm(input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), labels=labels,
              pixel_values=pixels, multimodal_indices=torch.tensor([0]))
    out.loss.backward()
    assert vlm.vision_backbone.patch_embed.weight.grad is not None
