"""A tiny evaluation-task kind for core tests (``toy-eval``): coloured squares written as PNGs, "Is it red?"
answered by the probabilities of "yes" and "no", scored by accuracy. Each record notes the rank that answered it,
so the distributed tests can see how the examples were shared."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from prism_core.registry import Registry
from prism_core.spec import EvalTaskSpec, spec_field
from prism_core.types import EvalExample

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


class ToyEvalTask:
    headline = "accuracy"

    def __init__(self, name: str, folder: Path, num_examples: int) -> None:
        from PIL import Image

        self.name = name
        folder.mkdir(parents=True, exist_ok=True)
        self._examples = []
        for i in range(num_examples):
            colour = list(COLOURS)[i % len(COLOURS)]
            path = folder / f"{i:03d}.png"
            if not path.exists():
                Image.new("RGB", (16, 16), COLOURS[colour]).save(path)
            self._examples.append(EvalExample(f"q{i}", str(path), {"label": "yes" if colour == "red" else "no"},
                                              f"toy-eval#{i}"))

    def examples(self) -> list[EvalExample]:
        return self._examples

    def predict(self, vlm: Any, examples: Sequence[EvalExample], pixel_values: Sequence[Any]) -> list[dict]:
        builder_prompts = []
        for _ in examples:
            builder = vlm.get_prompt_builder()
            builder.add_turn("human", "Is it red?")
            builder_prompts.append(builder.get_prompt())
        probabilities = vlm.generate_batch(list(pixel_values), builder_prompts,
                                           return_string_probabilities=["yes", "no"])
        rank = int(os.environ.get("RANK", "0"))
        return [{"id": e.id, "label": e.fields["label"], "probabilities": p, "rank": rank,
                 "prediction": "yes" if p[0] >= p[1] else "no"} for e, p in zip(examples, probabilities, strict=True)]

    def score(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        correct = [r["prediction"] == r["label"] for r in records]

        def accuracy(label: str) -> float:
            rows = [c for c, r in zip(correct, records, strict=True) if r["label"] == label]
            return sum(rows) / max(1, len(rows))

        return {"accuracy": sum(correct) / len(correct),
                "yes_ratio": sum(r["prediction"] == "yes" for r in records) / len(records),
                "by_label": {label: accuracy(label) for label in ("yes", "no")}}


@attrs.frozen(kw_only=True)
class ToyEvalSpec(EvalTaskSpec):
    kind: ClassVar[str] = "toy-eval"

    num_examples: int = spec_field(10, help="examples")
    folder: str = spec_field("toy-eval", help="where the images go, under the data root")

    def build(self, *, root: str | None = None) -> ToyEvalTask:
        return ToyEvalTask(self.kind, Path(root or ".") / self.folder, self.num_examples)


def registry() -> Registry:
    """The training toys' registry (fakes, toy data, strategies) with ``toy-eval``."""
    from tests.train.toy_run import registry as toy_registry

    toys = toy_registry()
    toys.register(ToyEvalSpec, distribution="prism-core-tests")
    return toys
