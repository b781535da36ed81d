"""``prism data check SPEC``: read every example and image of a spec's data once, in parallel, and report every
problem before a long run meets them one batch at a time.

The data set is built as training builds it (same kind, ``train.stage``, tokenizer and prompt format) but under
``on_bad_example = "skip"`` where the kind has that field, so every bad entry is collected instead of the first one
raised. Each example is then loaded (images decoded in full) and checked as the collator will batch it: a row left
without a supervised token by ``train.max_length`` is a problem here too. The vision backbone is not built (that
would load its weights): images are decoded and checked, not transformed.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import attrs

from prism_core.data import BadExample, BadExampleError


@dataclass
class CheckReport:
    examples: int = 0
    with_image: int = 0
    problems: list[BadExample] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        n = len(self.problems)
        head = (f"{n} problem{'s' if n != 1 else ''} in {self.examples} examples ({self.with_image} with an image), "
                f"{self.seconds:.1f} s")
        if not n:
            return head
        reasons = Counter(p.reason for p in self.problems)
        files = Counter(p.file for p in self.problems)
        return (f"{head}: " + ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
                + "\n  by file: " + ", ".join(f"{name} {count}" for name, count in files.most_common()))


class _Placeholder:
    """Stands in for the vision transform: the image is decoded and checked, nothing is resized."""

    def __call__(self, image: Any) -> Any:
        import torch

        return torch.zeros(())


class _CheckOne:
    """``(index, problem or None, has_image)`` for one example (runs in loader workers)."""

    def __init__(self, dataset: Any, collator: Any, has_image: Sequence[bool]) -> None:
        self.dataset, self.collator, self.has_image = dataset, collator, has_image

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, BadExample | None, bool]:
        try:
            example = self.dataset[index]
            if isinstance(example, BadExample):
                return index, example, self.has_image[index]
            if example.has_image != bool(self.has_image[index]):
                said = "an image" if self.has_image[index] else "no image"
                return index, BadExample(example.source, f"modality_lengths() says {said}, the example disagrees",
                                         "other"), example.has_image
            return index, self.collator.problem(example), example.has_image
        except BadExampleError as exc:  # a kind without `on_bad_example` raises instead
            source, _, message = str(exc).partition(": ")
            return index, BadExample(source, message or source), bool(self.has_image[index])


def _as_list(items: list[Any]) -> list[Any]:
    return items


def build_for_check(spec: Any) -> tuple[Any, Any, list[str]]:
    """(data set, collator, notes) built as training would, but skipping (and so collecting) bad entries."""
    from prism_core.composition import default_prompt_format_spec
    from prism_core.data.collate import Collator

    data_spec, notes = spec.data, []
    fields = attrs.fields_dict(type(data_spec))
    if "on_bad_example" in fields:
        data_spec = attrs.evolve(data_spec, on_bad_example="skip")
    if "keep_in_memory" in fields:
        data_spec = attrs.evolve(data_spec, keep_in_memory=False)  # each example is read once here
    model = spec.model
    tokenizer = model.llm.build_tokenizer()
    format_spec = model.prompt_format or default_prompt_format_spec(model.llm)
    prompt_format = None if format_spec is None else format_spec.build(tokenizer=tokenizer)
    dataset = data_spec.build(tokenizer=tokenizer, prompt_format=prompt_format, image_transform=_Placeholder(),
                              split="train", stage=spec.train.stage)
    patches = model.vision.num_patches
    if patches is None:
        notes.append(f"vision kind {model.vision.kind!r} does not say its patch count: rows are checked against "
                     f"train.max_length without the image tokens")
    tokens = 0 if patches is None else model.projector.num_tokens(patches)  # what training budgets with
    collator = Collator(0, spec.train.max_length, image_tokens=tokens, on_bad_example="skip")
    return dataset, collator, notes


def default_workers() -> int:
    return max(1, min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def check_data(spec: Any, *, workers: int | None = None, progress: bool = True,
               on_problem: Callable[[BadExample], None] | None = None) -> CheckReport:
    """Check every example of ``spec.data``; ``on_problem`` is called for each problem as it is found."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    started = time.monotonic()
    dataset, collator, notes = build_for_check(spec)
    report = CheckReport(notes=notes)
    for bad in getattr(dataset, "skipped_at_load", ()):
        report.problems.append(bad)
        if on_problem:
            on_problem(bad)
    has_image = [bool(h) for h, _ in dataset.modality_lengths()]
    workers = default_workers() if workers is None else workers
    loader = DataLoader(_CheckOne(dataset, collator, has_image), batch_size=32, num_workers=workers,
                        collate_fn=_as_list)
    found: list[tuple[int, BadExample]] = []
    with tqdm(total=len(dataset), desc="checking", unit="example", disable=not progress, dynamic_ncols=True) as bar:
        for chunk in loader:
            for index, problem, image in chunk:
                report.examples += 1
                report.with_image += bool(image)
                if problem is not None:
                    found.append((index, problem))
                    if on_problem:
                        on_problem(problem)
            bar.update(len(chunk))
    report.problems += [problem for _, problem in sorted(found, key=lambda item: item[0])]
    report.seconds = time.monotonic() - started
    return report


__all__ = ["CheckReport", "build_for_check", "check_data"]
