"""Batching for any ``Dataset``: the modality/length-grouping sampler, the padding collator and a loader that
replaces and reports skipped examples; ``prism data check`` (``prism_core.data.check``).

Importing this package stays torch-free: the sampler, collator and loader are resolved on first access.
Bad-example types live here because datasets (in plugins) and the collator both use them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

#: What a dataset or collator does with an unusable example: raise naming it, or count it and skip it.
OnBadExample = Literal["error", "skip"]

#: Why an example was skipped (metrics and reports count by these): an entry of an annotation file that failed
#: validation when the file was read, an image that failed to load, text the tokenizer / prompt format refused,
#: a row left without a supervised token by truncation, anything else a dataset reports.
SKIP_REASONS = ("bad-entry", "bad-image", "bad-text", "too-long", "other")


class DataError(ValueError):
    """A problem with the user's data (a file, an entry, an image): ``prism-run`` exits 2 with the message only."""


class BadExampleError(DataError):
    """An example that cannot be trained on; the message starts with its source (``file.json#index``)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file the spec names does not exist; the message names it (and how to get it, when known)."""


@dataclass(frozen=True)
class BadExample:
    """Stand-in a dataset returns under ``on_bad_example = "skip"`` for an example it could not load.

    The loader replaces it and counts it (by ``reason``, one of ``SKIP_REASONS``, and by file), so nothing is
    skipped silently.
    """

    source: str
    message: str
    reason: str = "other"

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"

    @property
    def file(self) -> str:
        """The file part of ``source`` (``llava_v1_5_mix665k.json#12`` → ``llava_v1_5_mix665k.json``)."""
        return self.source.rsplit("#", 1)[0]


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

__all__ = ["SKIP_REASONS", "BadExample", "BadExampleError", "DataError", "MissingDataError", "OnBadExample",
           "check_on_bad_example", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
