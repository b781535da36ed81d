"""Spec for the synthetic shapes data set (torch-free: the generator and dataset are imported in ``build``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import attrs

from prism_core.spec import SEED_RANGE, DatasetSpec, spec_field

QuestionType = Literal["colour", "shape", "presence", "count"]

#: Every colour and shape the generator can draw (RGB chosen to be far apart, so 32 px images stay unambiguous).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25), "green": (30, 180, 40), "blue": (30, 60, 230), "yellow": (245, 225, 30),
    "purple": (130, 40, 170), "orange": (250, 140, 20), "cyan": (30, 220, 230), "magenta": (235, 40, 200),
    "white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "pink": (250, 170, 190),
    "brown": (120, 70, 20),
}
SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "pentagon", "ellipse", "rectangle", "heart",
)
QUESTION_TYPES: tuple[str, ...] = ("colour", "shape", "presence", "count")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@attrs.frozen(kw_only=True)
class ShapesSpec(DatasetSpec):
    """Coloured shapes on a plain background with one-word answers; generated once and cached."""

    kind: ClassVar[str] = "synthetic-shapes"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "shapes-tiny": {"image_size": 32, "num_train": 64, "num_test": 32},
        "shapes-quickstart": {"image_size": 32, "num_train": 12000, "num_validation": 600, "num_test": 600},
        "shapes-count": {"image_size": 64, "num_train": 20000, "num_test": 1000,
                         "question_types": ("colour", "shape", "presence", "count")},
        "shapes-224": {"image_size": 224, "num_train": 4000, "num_test": 200},
        "shapes-384": {"image_size": 384, "num_train": 4000, "num_test": 200},
    }

    image_size: int = spec_field(32, at_least=16,
                                 help="image side in pixels (16 or more: shapes must stay recognisable)")
    num_train: int = spec_field(12000, at_least=1, help="examples in the train split")
    num_test: int = spec_field(600, at_least=1,
                               help="examples in the held-out test split (generated from a separate seed)")
    num_validation: int = spec_field(
        0, at_least=0, help="examples in the validation split (its own seed, balanced like test, no held_out "
                            "combination): what train.validate_every evaluates, so stopping never sees the test split"
    )
    question_types: tuple[QuestionType, ...] = spec_field(
        ("colour", "shape", "presence"), help="question types to generate: colour, shape, presence, count"
    )
    question_mix: tuple[float, ...] | None = spec_field(
        None, at_least=0, help="relative weight of each question type in the train split, in question_types order "
                                "(default: equal); the test split is always balanced"
    )
    hard_negatives: float = spec_field(
        0.0, at_least=0, at_most=1,
        help="fraction of the train split's 'Is there a {colour} {shape}?' questions answered no that ask about the "
             "drawn shape in another colour or the drawn colour on another shape, so that only checking both answers "
             "them (drawn at random, most differ in both); validation and test are unchanged"
    )
    colours: tuple[str, ...] = spec_field(
        ("red", "green", "blue", "yellow", "cyan", "magenta"), help=f"colours to draw from: {', '.join(COLOURS)}"
    )
    shapes: tuple[str, ...] = spec_field(
        ("circle", "square", "triangle", "cross"), help=f"shapes to draw from: {', '.join(SHAPES)}"
    )
    background: str = spec_field("gray", help="background colour (must not be one of `colours`)")
    held_out: tuple[str, ...] = spec_field(
        (), help="'colour shape' combinations never shown in the train split, e.g. ['red circle']"
    )
    max_count: int = spec_field(3, at_least=1, at_most=len(NUMBER_WORDS) - 1,
                                help="most copies of the asked shape in a count scene")
    count_distractors: int = spec_field(
        2, at_least=0, at_most=4,
        help="most shapes of other kinds in a count scene, drawn from 0 to this (0: the scene holds only the "
             "counted shape, so counting needs no shape discrimination)"
    )
    seed: int = spec_field(0, **SEED_RANGE, help="generation seed (the test split uses a seed derived from it)")
    cache_dir: str | None = spec_field(
        None, help="where generated sets are kept (default: $PRISM_CACHE/shapes or ~/.cache/prism/shapes)"
    )
    on_bad_example: Literal["error", "skip"] = spec_field("error", help="unusable example: raise, or count and skip")
    keep_in_memory: bool = spec_field(
        True, help="decode, transform and tokenize each example once and keep it (the sets are small; with loader "
                   "workers each worker keeps its own copy)"
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.question_types:
            yield "question_types", "must name at least one question type"
        if len(set(self.question_types)) != len(self.question_types):
            yield "question_types", "has duplicates"
        if self.question_mix is not None:
            if len(self.question_mix) != len(self.question_types):
                yield "question_mix", (f"needs one weight per question type ({len(self.question_types)}), "
                                       f"got {len(self.question_mix)}")
            elif not sum(self.question_mix) > 0:  # each weight's range is declared
                yield "question_mix", "weights must have a positive sum"
        for name, allowed in (("colours", COLOURS), ("shapes", SHAPES)):
            values = getattr(self, name)
            unknown = [v for v in values if v not in allowed]
            if unknown:
                yield name, f"unknown {name} {unknown}; choose from {', '.join(allowed)}"
            if len(set(values)) != len(values):
                yield name, "has duplicates"
            if not values:
                yield name, "must not be empty"
        if self.background not in COLOURS:
            yield "background", f"unknown colour {self.background!r}; choose from {', '.join(COLOURS)}"
        elif self.background in self.colours:
            yield "background", f"{self.background!r} is also a shape colour: shapes of that colour would vanish"
        if "presence" in self.question_types and len(self.colours) * len(self.shapes) < 2:
            yield "question_types", "presence questions need at least two colour × shape combinations"
        for i, combo in enumerate(self.held_out):
            parts = combo.split()
            if len(parts) != 2 or parts[0] not in self.colours or parts[1] not in self.shapes:
                yield f"held_out[{i}]", f"expected 'colour shape' from the spec's colours and shapes, got {combo!r}"
        if len(set(self.held_out)) >= len(self.colours) * len(self.shapes):
            yield "held_out", "holds out every colour × shape combination"

    def generation_params(self) -> dict[str, Any]:
        """Everything that determines the generated files (the cache key)."""
        params = {name: getattr(self, name) for name in (
            "image_size", "num_train", "num_test", "question_types", "question_mix", "colours", "shapes",
            "background", "held_out", "max_count", "seed")}
        defaults = attrs.fields_dict(type(self))
        for name in ("num_validation", "hard_negatives", "count_distractors"):
            if getattr(self, name) != defaults[name].default:  # only when set: sets generated before keep their key
                params[name] = getattr(self, name)
        return params

    def splits(self) -> tuple[str, ...]:
        return ("train", "validation", "test") if self.num_validation else ("train", "test")

    def split_problem(self, split: str) -> str | None:
        """Why ``split`` is not a split of this set (None when it is)."""
        if split in self.splits():
            return None
        names = [repr(s) for s in self.splits()]
        hint = " (set num_validation to generate a validation split)" if split == "validation" else ""
        return f"synthetic-shapes has splits {', '.join(names[:-1])} and {names[-1]}, not {split!r}{hint}"

    def build(self, *, tokenizer: Any, prompt_format: Any, image_transform: Any, split: str = "train",
              stage: str = "finetune") -> Any:
        """The ``split`` of the generated set (the same for every ``stage``)."""
        from prism_plugin_shapes.dataset import build_shapes_dataset

        return build_shapes_dataset(self, tokenizer=tokenizer, prompt_format=prompt_format,
                                    image_transform=image_transform, split=split)
