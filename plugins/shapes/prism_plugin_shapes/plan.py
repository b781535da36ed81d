"""What each example of a split asks, decided up front for the whole split (then every example is drawn from its own
seed, in any order or process).

The train split draws its question types by ``question_mix`` and each image's object at random. The validation and
test splits are balanced so that no answer prior can score above chance: as many questions of each type; each
colour × shape drawn equally often for the colour and shape questions (a model that always gives the same answer
scores 1 / the number of answers); and the yes/no questions come in pairs that ask the same question, once of an
image that shows the object and once of one that does not (the object drawn for the "no" image is as balanced), so
a model that answers from the question alone scores exactly 50%.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from prism_plugin_shapes.spec import ShapesSpec

Combo = tuple[str, str]  # (colour, shape)


class Plan(NamedTuple):
    """One example: its question type, and what the balanced splits fix (None: the generator draws it)."""

    qtype: str
    answer_yes: bool = False
    drawn: Combo | None = None  # the object the image shows
    with_colour: bool | None = None  # presence asked as "Is there a {colour} {shape}?" (else "Is there a {shape}?")
    asked: Combo | None = None  # the object a presence question asks about (only its shape without colour)


def combos(spec: ShapesSpec, split: str) -> list[Combo]:
    # Validation decides when training stops: it must not see the combinations held out to test generalisation.
    held = {tuple(c.split()) for c in spec.held_out} if split in ("train", "validation") else set()
    return [(c, s) for c in spec.colours for s in spec.shapes if (c, s) not in held]


def plan_split(spec: ShapesSpec, split: str) -> list[Plan]:
    count = {"train": spec.num_train, "validation": spec.num_validation, "test": spec.num_test}[split]
    rng = random.Random(f"prism-shapes:{spec.seed}:{split}:plan")
    if split == "train":
        weights = spec.question_mix or [1.0] * len(spec.question_types)
        types = rng.choices(list(spec.question_types), weights, k=count)
    else:  # validation, test: exactly balanced whatever the training mix, so every type is measured alike
        types = [spec.question_types[i % len(spec.question_types)] for i in range(count)]
        rng.shuffle(types)
    yes = [i % 2 == 0 for i in range(types.count("presence"))]  # exactly 50/50
    rng.shuffle(yes)
    answers = iter(yes)
    plan = [Plan(t, next(answers) if t == "presence" else False) for t in types]
    if split != "train":
        _balance(plan, spec, combos(spec, split), rng)
    return plan


def _balance(plan: list[Plan], spec: ShapesSpec, allowed: list[Combo], rng: random.Random) -> None:
    for qtype, answered in (("colour", 0), ("shape", 1)):
        where = [i for i, p in enumerate(plan) if p.qtype == qtype]
        for i, combo in zip(where, _cycle_by(allowed, answered, len(where), rng), strict=True):
            plan[i] = plan[i]._replace(drawn=combo)
    yes = [i for i, p in enumerate(plan) if p.qtype == "presence" and p.answer_yes]
    no = [i for i, p in enumerate(plan) if p.qtype == "presence" and not p.answer_yes]
    pairs = min(len(yes), len(no))  # an odd count leaves one "yes" to the generator
    forms = _cycle([True, False], pairs, rng) if len(spec.shapes) > 1 else [True] * pairs
    asked = _cycle_by(allowed, 1, pairs, rng)
    shown = _cycle_by(allowed, 1, pairs, rng)  # what each "no" image shows instead
    _avoid(shown, asked, forms, allowed, rng)
    for k in range(pairs):
        plan[yes[k]] = plan[yes[k]]._replace(drawn=asked[k], with_colour=forms[k], asked=asked[k])
        plan[no[k]] = plan[no[k]]._replace(drawn=shown[k], with_colour=forms[k], asked=asked[k])


def _cycle(items: list, count: int, rng: random.Random) -> list:
    """``count`` items, each as often as the others (within one), in random order."""
    out: list = []
    while len(out) < count:
        block = list(items)
        rng.shuffle(block)
        out += block
    return out[:count]


def _cycle_by(allowed: list[Combo], attribute: int, count: int, rng: random.Random) -> list[Combo]:
    """``count`` combinations whose colour (``attribute`` 0) or shape (1) values come equally often (within one),
    each value's combinations in turn."""
    groups: dict[str, list[Combo]] = {}
    for combo in allowed:
        groups.setdefault(combo[attribute], []).append(combo)
    turns = {value: _cycle(members, count, rng) for value, members in groups.items()}
    used = dict.fromkeys(groups, 0)
    out = []
    for value in _cycle(list(groups), count, rng):
        out.append(turns[value][used[value]])
        used[value] += 1
    return out


def _differs(shown: Combo, asked: Combo, with_colour: bool) -> bool:
    return shown != asked if with_colour else shown[1] != asked[1]


def _avoid(shown: list[Combo], asked: list[Combo], forms: list[bool], allowed: list[Combo],
           rng: random.Random) -> None:
    """Make every "no" image differ from what its question asks, by swapping shown objects between pairs (both
    lists keep their counts); where no swap works, draw another object."""
    for i in range(len(shown)):
        if _differs(shown[i], asked[i], forms[i]):
            continue
        for j in range(len(shown)):
            if _differs(shown[j], asked[i], forms[i]) and _differs(shown[i], asked[j], forms[j]):
                shown[i], shown[j] = shown[j], shown[i]
                break
        else:
            others = [c for c in allowed if _differs(c, asked[i], forms[i])]
            if not others:
                raise ValueError(f"no object to show for a 'no' answer to a question about {' '.join(asked[i])}: "
                                 "the split has a single colour × shape combination")
            shown[i] = rng.choice(others)
