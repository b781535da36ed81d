"""prism: train and run visually-conditioned language models from plugin components.

Importing this package does not import torch; everything heavy is imported when a model is built.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name → module that defines it. Resolved on first attribute access (PEP 562), so `import prism_core`
# stays cheap and torch-free.
_LAZY = {
    "compose": "prism_core.composition",
    "build": "prism_core.composition",
    "load": "prism_core.io",
    "save": "prism_core.io",
    "PrismVLM": "prism_core.vlm",
    "PromptBuilder": "prism_core.prompting",
    "load_spec": "prism_core.spec",
    "loads_spec": "prism_core.spec",
    "dumps_spec": "prism_core.spec",
    "RunSpec": "prism_core.spec",
    "ModelSpec": "prism_core.spec",
    "TrainSpec": "prism_core.spec",
    "EvalSpec": "prism_core.spec",
    "evaluate": "prism_core.evaluation",
    "SpecError": "prism_core.spec",
    "get_registry": "prism_core.registry",
    "available_models": "prism_core.models",
    "available_model_names": "prism_core.models",
    "get_model_description": "prism_core.models",
    "IGNORE_INDEX": "prism_core.types",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prism_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
