"""Batching for any ``Dataset``: the modality/length-grouping sampler, the padding collator and a loader that
reports skipped examples.

Importing this package stays torch-free: the sampler, collator and loader are resolved on first access.
Bad-example types live here because datasets (in plugins) and the collator both use them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

#: What a dataset or collator does with an unusable example: raise naming it, or count it and skip it.
OnBadExample = Literal["error", "skip"]


class BadExampleError(ValueError):
    """An example that cannot be trained on; the message starts with its source (``file.json#index``)."""


@dataclass(frozen=True)
class BadExample:
    """Stand-in a dataset returns under ``on_bad_example = "skip"`` for an example it could not load.

    The collator drops it and the loader counts it, so nothing is skipped silently.
    """

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def check_on_bad_example(value: str) -> OnBadExample:
    if value not in ("error", "skip"):
        raise ValueError(f"on_bad_example must be 'error' or 'skip', got {value!r}")
    return value  # type: ignore[return-value]


_LAZY = {
    "ModalityLengthSampler": "prism_core.data.sampler",
    "Collator": "prism_core.data.collate",
    "PrismDataLoader": "prism_core.data.collate",
    "build_dataloader": "prism_core.data.collate",
    "ConversationDataset": "prism_core.data.conversations",
    "load_conversations": "prism_core.data.conversations",
}

__all__ = ["BadExample", "BadExampleError", "OnBadExample", "check_on_bad_example", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
