"""A stand-in model that knows the fixtures' answers: it answers each prompt by the first (text, answer) pair whose
text the prompt contains, and records every call, so tests see what the tasks asked and how they batched."""

from __future__ import annotations

from typing import Any

from prism_core.prompting import PromptBuilder
from prism_core.testing.fakes import FakePureFormat


class OracleVLM:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.prompt_format = FakePureFormat()
        self.calls: list[dict[str, Any]] = []

    @staticmethod
    def image_transform(image: Any) -> tuple[int, int]:
        return image.size  # stands in for pixels: the tasks must hand each row's own image on

    def get_prompt_builder(self, system_prompt: str | None = None) -> PromptBuilder:
        return PromptBuilder(self.prompt_format)

    def answer(self, text: str) -> str:
        for needle, answer in self.pairs:
            if needle in text:
                return answer
        raise AssertionError(f"the oracle has no answer for {text!r}")

    def generate_batch(self, pixel_values: Any, texts: list[str], return_string_probabilities: Any = None,
                       **kwargs: Any) -> list[Any]:
        assert len(pixel_values) == len(texts) and all(p is not None for p in pixel_values)
        self.calls.append({"texts": list(texts), "candidates": return_string_probabilities, "kwargs": kwargs})
        answers = [self.answer(t) for t in texts]
        if return_string_probabilities is None:
            return answers
        n = len(return_string_probabilities)
        return [[0.9 if c == a else 0.1 / (n - 1) for c in return_string_probabilities] for a in answers]
