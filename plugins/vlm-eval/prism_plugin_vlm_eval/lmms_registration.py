"""lmms-eval finds the prism model here (entry-point group ``lmms_eval.models``); importing this module loads
neither torch nor the adapter."""

from __future__ import annotations

from typing import Any


def manifest() -> Any:
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="prism", simple_class_path="prism_plugin_vlm_eval.lmms.PrismLMM")
