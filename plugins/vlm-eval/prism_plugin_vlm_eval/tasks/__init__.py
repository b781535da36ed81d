"""The benchmarks as ``EvalTask`` objects, one module per way of answering: ``vqa`` (free-form answers),
``yes_no`` (POPE, VSR: the probabilities of two answers), ``choice`` (TallyQA, AI2D: of the option letters) and
``refer`` (boxes for referring expressions).

A task reads and checks its annotation files when it is built, so a bad file fails before any model runs; its
images are checked to exist then too, and opened by the evaluation runner.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prism_core.data import DataError
from prism_core.types import EvalExample


class Benchmark:
    """What the tasks share: a name, their examples (read once) and the two ways of asking the model."""

    headline = "accuracy"

    def __init__(self, name: str, examples: list[EvalExample]) -> None:
        self.name = name
        if not examples:
            raise DataError(f"{name}: the annotation files hold no example")
        missing = [e for e in examples if e.image is not None and not os.path.isfile(e.image)]
        if missing:
            shown = "; ".join(f"{e.image} ({e.source})" for e in missing[:3])
            raise DataError(f"{name}: {len(missing)} of {len(examples)} images are missing, e.g. {shown}")
        self._examples = examples

    def examples(self) -> list[EvalExample]:
        return self._examples


def generate(vlm: Any, prompts: Sequence[str], pixel_values: Sequence[Any], max_new_tokens: int) -> list[str]:
    """Greedy answers, one batched call (the original harness's generation settings)."""
    return vlm.generate_batch(list(pixel_values), list(prompts), do_sample=False, max_new_tokens=max_new_tokens)


def probabilities(vlm: Any, prompts: Sequence[str], pixel_values: Sequence[Any],
                  answers: Sequence[str]) -> list[list[float]]:
    """Per prompt, the probabilities of ``answers`` (normalised over them), one batched call."""
    return vlm.generate_batch(list(pixel_values), list(prompts), return_string_probabilities=list(answers))


def record(example: EvalExample, **answer: Any) -> dict[str, Any]:
    """A prediction record: the example's id and fields, then the model's answer."""
    return {"id": example.id, **example.fields, **answer}
