"""The shapes data set as a ``Dataset``: the generated LLaVA chat files read by prism-core's conversation reader."""

from __future__ import annotations

from typing import Any

from prism_core.data.conversations import ConversationDataset, load_conversations
from prism_plugin_shapes.generate import ensure_generated
from prism_plugin_shapes.spec import ShapesSpec


class ShapesDataset(ConversationDataset):
    """Adds per-example question types (evaluation reports accuracy per type)."""

    def question_types(self) -> list[str]:
        return [r.extra["question_type"] for r in self.records]

    def answer(self, index: int) -> str:
        return self.records[index].turns[-1].message


def build_shapes_dataset(
    spec: ShapesSpec, *, tokenizer: Any, prompt_format: Any, image_transform: Any, split: str = "train"
) -> ShapesDataset:
    problem = spec.split_problem(split)
    if problem:
        raise ValueError(problem)
    root = ensure_generated(spec)
    records, bad = load_conversations(root / f"{split}.json", root, format="chat", on_bad_example=spec.on_bad_example,
                                      label=f"shapes/{split}.json")
    return ShapesDataset(records, tokenizer=tokenizer, prompt_format=prompt_format, image_transform=image_transform,
                         on_bad_example=spec.on_bad_example, bad_at_load=bad, keep_in_memory=spec.keep_in_memory)
