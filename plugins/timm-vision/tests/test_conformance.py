import pytest
from prism_plugin_timm_vision.spec import TimmViTSpec

conformance = pytest.importorskip("prism_core.testing.conformance")


class TestTimmViTConformance(conformance.VisionBackboneConformance):
    spec = TimmViTSpec.from_preset("vit-tiny")
