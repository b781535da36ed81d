"""Evaluation-task kind ``synthetic-shapes``: exact match on a split of a shapes set, with the blind control
(``prism_core.evaluation.conversations``), as one task among the benchmarks (``prism eval --task``, ``[eval]``).

Torch-free: the set is generated (or found in the cache) when the task is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

from prism_core.spec import DatasetSpec, EvalTaskSpec, spec_field
from prism_plugin_shapes.spec import ShapesSpec


@attrs.frozen(kw_only=True)
class ShapesTaskSpec(EvalTaskSpec):
    """The held-out split of a generated shapes set: answers scored by exact match, per question type, with the
    image and blind (image zeroed; choosing among each type's answers, and answering freely)."""

    kind: ClassVar[str] = "synthetic-shapes"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "shapes-quickstart": {"data": {"kind": "synthetic-shapes", "preset": "shapes-quickstart", "image_size": 40,
                                       "question_mix": (0.3, 1.5, 1.2)}, "max_new_tokens": 3},
    }

    data: DatasetSpec = spec_field(
        factory=ShapesSpec, help="the shapes set: a synthetic-shapes data table (the training run's [data])")
    split: str = spec_field("test", help="split to evaluate: test, train, or validation (with data.num_validation)")
    max_new_tokens: int = spec_field(8, at_least=1, help="tokens generated per answer")
    blind_control: bool = spec_field(True, help="also ask every question with the image zeroed")

    def problems(self) -> Iterator[tuple[str, str]]:
        if not isinstance(self.data, ShapesSpec):
            yield "data", f"must be a synthetic-shapes data table, got kind {self.data.kind!r}"
        problem = self.data.split_problem(self.split) if isinstance(self.data, ShapesSpec) else None
        if problem:
            yield "split", problem

    def build(self, *, root: str | None = None) -> Any:
        """The task over the split's records (``root`` is not used: the set lives in the shapes cache)."""
        from prism_core.data.conversations import load_conversations
        from prism_core.evaluation.conversations import ConversationTask
        from prism_plugin_shapes.generate import ensure_generated

        assert isinstance(self.data, ShapesSpec)
        folder = ensure_generated(self.data)
        records, _ = load_conversations(folder / f"{self.split}.json", folder, format="chat",
                                        on_bad_example="error", label=f"shapes/{self.split}.json")
        return ConversationTask(records, name=self.kind, max_new_tokens=self.max_new_tokens,
                                blind_control=self.blind_control)
