"""Draw the shapes data set: LLaVA chat JSON (``train.json``, ``validation.json`` when asked for, ``test.json``)
plus PNG images, cached on disk.

Single-shape images carry colour, shape and presence questions (one shape, size and position varied, big enough
to read at 32 px); count questions use multi-shape scenes. Answers are single words; each entry also names the
objects its image shows (``"objects": ["red circle"]``). What each example asks is planned per split
(``prism_plugin_shapes.plan``: the held-out splits are balanced), then drawn from its own seed. The cache directory
is keyed by every generation parameter and written atomically (built under a temporary name, then renamed), so a
crash or a concurrent generator never leaves a half set behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from prism_plugin_shapes.plan import Plan, combos, plan_split
from prism_plugin_shapes.spec import COLOURS, NUMBER_WORDS, ShapesSpec

GENERATOR_VERSION = 3  # bump when drawing, wording or split planning changes: old caches are then not reused

QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is in the image?",
    "presence_colour": "Is there a {colour} {shape}?",
    "presence_shape": "Is there a {shape}?",
    "count": "How many {plural} are there?",
}


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")  # "crosses", not "crosss"


def vocabulary(spec: ShapesSpec) -> list[str]:
    """Every word the questions and answers use (for building a tiny tokenizer)."""
    words = set()
    for template in QUESTIONS.values():
        words.update(template.replace("?", " ?").split())
    words.update(spec.colours)
    words.update(spec.shapes)
    words.update(plural(s) for s in spec.shapes)
    words.update(("yes", "no", *NUMBER_WORDS[: spec.max_count + 1]))
    return sorted(w for w in words if "{" not in w)


# -- geometry ------------------------------------------------------------------------------------------------------
def _regular(cx: float, cy: float, r: float, n: int, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    """Draw ``shape`` centred at (cx, cy) inside a circle of radius ``r``."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ellipse":
        draw.ellipse((cx - r, cy - 0.55 * r, cx + r, cy + 0.55 * r), fill=fill)
    elif shape == "square":
        h = 0.78 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "rectangle":
        draw.rectangle((cx - r, cy - 0.5 * r, cx + r, cy + 0.5 * r), fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular(cx, cy + 0.15 * r, 1.1 * r, 3), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.65 * r, cy), (cx, cy + r), (cx - 0.65 * r, cy)], fill=fill)
    elif shape in ("pentagon", "hexagon"):
        draw.polygon(_regular(cx, cy, r, 5 if shape == "pentagon" else 6), fill=fill)
    elif shape == "star":
        outer, inner = _regular(cx, cy, r, 5), _regular(cx, cy, 0.42 * r, 5, -math.pi / 2 + math.pi / 5)
        draw.polygon([p for pair in zip(outer, inner, strict=True) for p in pair], fill=fill)
    elif shape == "cross":
        t = 0.33 * r
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    elif shape == "heart":
        pts = []
        for k in range(24):
            a = 2 * math.pi * k / 24
            x = 16 * math.sin(a) ** 3
            y = 13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a)
            pts.append((cx + r * x / 16.5, cy - r * (y + 2.5) / 15))
        draw.polygon(pts, fill=fill)
    else:  # the spec validates names; this guards direct callers
        raise ValueError(f"unknown shape {shape!r}")


# -- scenes and questions ------------------------------------------------------------------------------------------
class _Scene:
    def __init__(self, size: int, background: str) -> None:
        self.size = size
        self.image = Image.new("RGB", (size, size), COLOURS[background])
        self.draw = ImageDraw.Draw(self.image)
        self.placed: list[tuple[float, float, float]] = []

    def place(self, rng: random.Random, shape: str, colour: str, r_min: float, r_max: float) -> bool:
        """Put a shape where it does not touch the others; False if no room was found."""
        for _ in range(60):
            r = rng.uniform(r_min, r_max)
            cx, cy = rng.uniform(r + 1, self.size - r - 1), rng.uniform(r + 1, self.size - r - 1)
            if all(math.hypot(cx - x, cy - y) > r + q + 1.5 for x, y, q in self.placed):
                self.placed.append((cx, cy, r))
                draw_shape(self.draw, shape, cx, cy, r, COLOURS[colour])
                return True
        return False


class _Generator:
    def __init__(self, spec: ShapesSpec, rng: random.Random, allowed: list[tuple[str, str]],
                 hard_negatives: float = 0.0) -> None:
        self.spec, self.rng, self.allowed, self.hard_negatives = spec, rng, allowed, hard_negatives
        self.drawn: list[tuple[str, str]] = []  # (colour, shape) of every object in the last image

    def single(self, drawn: tuple[str, str] | None = None) -> tuple[Image.Image, str, str]:
        colour, shape = drawn or self.rng.choice(self.allowed)
        scene = _Scene(self.spec.image_size, self.spec.background)
        s = self.spec.image_size
        scene.place(self.rng, shape, colour, 0.24 * s, 0.42 * s)
        self.drawn = [(colour, shape)]
        return scene.image, colour, shape

    def example(self, plan: Plan) -> tuple[Image.Image, str, str, str]:
        """(image, question type, question, answer); what ``plan`` leaves open is drawn at random."""
        qtype, answer_yes = plan.qtype, plan.answer_yes
        if qtype == "count":
            return self._count()
        image, colour, shape = self.single(plan.drawn)
        if qtype == "colour":
            return image, qtype, QUESTIONS["colour"], colour
        if qtype == "shape":
            return image, qtype, QUESTIONS["shape"], shape
        # presence: the asked object differs from the drawn one on "no"
        if plan.asked is not None:  # a balanced split: the question is planned, and the image fits its answer
            asked_colour, asked_shape = plan.asked
            question = (QUESTIONS["presence_colour"].format(colour=asked_colour, shape=asked_shape) if plan.with_colour
                        else QUESTIONS["presence_shape"].format(shape=asked_shape))
            return image, qtype, question, "yes" if answer_yes else "no"
        with_colour = self.rng.random() < 0.5 or len(self.spec.shapes) < 2
        if with_colour:
            others = [c for c in self.allowed if c != (colour, shape)]
            # Drawn uniformly, most "no" objects differ in both colour and shape, so looking at either one answers
            # them; a hard negative shares one of the two, so only checking both does.
            near = [c for c in others if c[0] == colour or c[1] == shape]
            if not answer_yes and near and self.hard_negatives and self.rng.random() < self.hard_negatives:
                others = near
            asked = (colour, shape) if answer_yes else self.rng.choice(others)
            question = QUESTIONS["presence_colour"].format(colour=asked[0], shape=asked[1])
        else:
            asked_shape = shape if answer_yes else self.rng.choice([s for s in self.spec.shapes if s != shape])
            question = QUESTIONS["presence_shape"].format(shape=asked_shape)
        return image, qtype, question, "yes" if answer_yes else "no"

    def _count(self) -> tuple[Image.Image, str, str, str]:
        s, spec = self.spec.image_size, self.spec
        target = self.rng.choice(spec.shapes)
        while True:
            n = self.rng.randint(1, spec.max_count)
            distractors = self.rng.randint(0, spec.count_distractors) if len(spec.shapes) > 1 else 0
            total = n + distractors
            r_max = max(0.09 * s, 0.42 * s / math.sqrt(total + 1.5))
            scene = _Scene(s, spec.background)
            colours = [c for c, sh in self.allowed if sh == target]
            if not colours:  # every colour of this shape is held out: ask about another shape
                target = self.rng.choice(sorted({sh for _, sh in self.allowed}))
                continue
            drawn: list[tuple[str, str]] = []
            ok = all(self._put(scene, drawn, self.rng.choice(colours), target, r_max) for _ in range(n))
            others = [c for c in self.allowed if c[1] != target]
            for _ in range(distractors if others else 0):
                colour, shape = self.rng.choice(others)
                ok = ok and self._put(scene, drawn, colour, shape, r_max)
            if ok:
                self.drawn = drawn
                return scene.image, "count", QUESTIONS["count"].format(plural=plural(target)), NUMBER_WORDS[n]

    def _put(self, scene: _Scene, drawn: list[tuple[str, str]], colour: str, shape: str, r_max: float) -> bool:
        drawn.append((colour, shape))
        return scene.place(self.rng, shape, colour, 0.65 * r_max, r_max)


def _draw_range(spec: ShapesSpec, split: str, out_dir: Path, start: int, plan: list[Plan]) -> list[dict]:
    allowed = combos(spec, split)
    width = len(str(max(spec.num_train, spec.num_test, spec.num_validation) - 1))
    entries = []
    for i, planned in enumerate(plan, start):
        # One seed per example (separate streams for train and test): reproducible however the work is split.
        gen = _Generator(spec, random.Random(f"prism-shapes:{spec.seed}:{split}:{i}"), allowed,
                         spec.hard_negatives if split == "train" else 0.0)
        image, qtype, question, answer = gen.example(planned)
        name = f"images/{split}/{i:0{width}d}.png"
        # Small images: zlib costs more time than the bytes it saves; large ones: keep the files small.
        image.save(out_dir / name, compress_level=0 if spec.image_size <= 64 else 1)
        entries.append({
            "id": f"{split}-{i}",
            "image": name,
            "question_type": qtype,
            "objects": [f"{colour} {shape}" for colour, shape in gen.drawn],  # what the image shows
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
        })
    return entries


def generate_split(spec: ShapesSpec, split: str, out_dir: Path, workers: int | None = None,
                   progress: bool = False) -> list[dict[str, Any]]:
    """Draw one split's images into ``out_dir/images/<split>/`` and return its JSON entries."""
    from tqdm import tqdm

    plan = plan_split(spec, split)
    (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    chunk = 500
    starts = range(0, len(plan), chunk)
    workers = workers if workers is not None else min(len(starts), os.cpu_count() or 1, 8)
    bar = tqdm(total=len(plan), disable=not progress or len(plan) < 2000, desc=f"shapes {split}", unit="img")
    entries: list[dict[str, Any]] = []
    if workers <= 1:
        for s in starts:
            entries += _draw_range(spec, split, out_dir, s, plan[s : s + chunk])
            bar.update(len(plan[s : s + chunk]))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_draw_range, spec, split, out_dir, s, plan[s : s + chunk]) for s in starts]
            for f in futures:
                entries += f.result()
                bar.update(chunk)
    bar.close()
    return entries


def cache_root(spec: ShapesSpec) -> Path:
    if spec.cache_dir:
        return Path(spec.cache_dir).expanduser()
    base = os.environ.get("PRISM_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "prism") / "shapes"


def cache_key(spec: ShapesSpec) -> str:
    params = {**spec.generation_params(), "generator": GENERATOR_VERSION}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=list).encode()).hexdigest()[:16]
    return f"{spec.image_size}px-{spec.num_train}-{spec.num_test}-{digest}"


def ensure_generated(spec: ShapesSpec, progress: bool = True, workers: int | None = None) -> Path:
    """The directory holding the generated set, generating it on first use."""
    final = cache_root(spec) / cache_key(spec)
    if (final / "meta.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # no meta.json: not written by this generator's atomic rename; replace it
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        for split in spec.splits():
            entries = generate_split(spec, split, tmp, workers=workers, progress=progress)
            (tmp / f"{split}.json").write_text(json.dumps(entries))
        meta = {**spec.generation_params(), "generator": GENERATOR_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta, default=list, indent=1))  # written last: marks complete
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: its set is identical, keep it
            if not (final / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
