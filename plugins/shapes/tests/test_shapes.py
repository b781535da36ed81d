"""Synthetic shapes: balanced, readable, reproducible, cached atomically, held-out combos respected."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prism_plugin_shapes.generate import COLOURS, ensure_generated, plural, vocabulary
from prism_plugin_shapes.spec import ShapesSpec

from prism_core.spec import DatasetSpec, SpecError, structure
from prism_core.testing.conformance import DatasetConformance
from prism_core.testing.toys import ToyPromptFormat, image_transform, word_tokenizer


def make(tmp_path, **kw) -> ShapesSpec:
    return ShapesSpec.from_preset("shapes-tiny", cache_dir=str(tmp_path), **kw)


def entries(root: Path, split: str) -> list[dict]:
    return json.loads((root / f"{split}.json").read_text())


def test_single_shape_questions_are_balanced_and_answer_with_one_word(tmp_path):
    spec = make(tmp_path, num_train=600, num_test=8)
    data = entries(ensure_generated(spec, progress=False), "train")
    types = collections.Counter(e["question_type"] for e in data)
    assert set(types) == {"colour", "shape", "presence"} and min(types.values()) > 150
    presence = [e["conversations"][1]["value"] for e in data if e["question_type"] == "presence"]
    assert abs(presence.count("yes") - presence.count("no")) <= 1
    for e in data:
        question, answer = (t["value"] for t in e["conversations"])
        assert question.startswith("<image>\n") and len(answer.split()) == 1
        if e["question_type"] == "colour":
            assert question.endswith("What colour is the shape?") and answer in spec.colours
        if e["question_type"] == "shape":
            assert question.endswith("What shape is in the image?") and answer in spec.shapes


def test_question_mix_weights_the_train_split_and_the_test_split_stays_balanced(tmp_path):
    spec = make(tmp_path, num_train=900, num_test=90, question_mix=(0.2, 1.0, 1.8))
    root = ensure_generated(spec, progress=False)
    train = collections.Counter(e["question_type"] for e in entries(root, "train"))
    assert train["colour"] < 160 < train["shape"] < 360 < train["presence"]  # expected 60 / 300 / 540
    test = collections.Counter(e["question_type"] for e in entries(root, "test"))
    assert test == {"colour": 30, "shape": 30, "presence": 30}


def test_the_drawn_shape_has_the_answered_colour_and_is_clearly_visible(tmp_path):
    spec = make(tmp_path, num_train=60)
    root = ensure_generated(spec, progress=False)
    for e in entries(root, "train"):
        if e["question_type"] != "colour":
            continue
        image = Image.open(root / e["image"]).convert("RGB")
        assert image.size == (32, 32)
        colours = collections.Counter(map(tuple, np.asarray(image).reshape(-1, 3).tolist()))
        want = COLOURS[e["conversations"][1]["value"]]
        assert colours[want] >= 40, "at least 40 of 1024 pixels show the shape"
        assert set(colours) <= {want, COLOURS[spec.background]}, "plain background, one shape, no blending"


def test_splits_differ_generation_is_reproducible_and_the_cache_is_reused(tmp_path):
    spec = make(tmp_path)
    root = ensure_generated(spec, progress=False)
    train, test = entries(root, "train"), entries(root, "test")
    assert len(train) == 64 and len(test) == 32
    first = (root / train[0]["image"]).read_bytes()
    assert first != (root / test[0]["image"]).read_bytes()
    mtime = (root / "meta.json").stat().st_mtime_ns
    assert ensure_generated(spec, progress=False) == root and (root / "meta.json").stat().st_mtime_ns == mtime
    other = ensure_generated(make(tmp_path / "b"), progress=False, workers=2)
    assert entries(other, "train") == train and (other / train[0]["image"]).read_bytes() == first
    assert ensure_generated(make(tmp_path, seed=1), progress=False) != root
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name], "no temporary directory left behind"


def test_a_crash_mid_generation_leaves_no_set(tmp_path, monkeypatch):
    import prism_plugin_shapes.generate as gen

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen, "plan_split", boom)
    with pytest.raises(RuntimeError):
        ensure_generated(make(tmp_path), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_held_out_combinations_never_appear_in_train(tmp_path):
    spec = make(tmp_path, num_train=800, colours=("red", "blue"), shapes=("circle", "square"),
                held_out=("red circle",), question_types=("colour", "shape", "presence"))
    data = entries(ensure_generated(spec, progress=False), "train")
    for e in data:
        question = e["conversations"][0]["value"]
        assert "red circle" not in question
    root = ensure_generated(spec, progress=False)
    shown = set()
    for e in data:
        if e["question_type"] in ("colour", "shape"):
            image = np.asarray(Image.open(root / e["image"]).convert("RGB"))
            pixels = set(map(tuple, image.reshape(-1, 3).tolist())) - {COLOURS["gray"]}
            shown.add(pixels.pop())
    assert COLOURS["red"] in shown  # red still appears (as a square)


def test_the_validation_split_has_its_own_images_balanced_and_without_held_out_combinations(tmp_path):
    spec = make(tmp_path, num_validation=60, question_mix=(0.2, 1.0, 1.8), colours=("red", "blue"),
                shapes=("circle", "square"), held_out=("red circle",))
    root = ensure_generated(spec, progress=False)
    validation = entries(root, "validation")
    assert collections.Counter(e["question_type"] for e in validation) == {"colour": 20, "shape": 20, "presence": 20}
    drawn = {e["image"]: (root / e["image"]).read_bytes() for e in validation}
    others = {(root / e["image"]).read_bytes() for split in ("train", "test") for e in entries(root, split)}
    assert all(name.startswith("images/validation/") for name in drawn)
    # Its own draws: at 32 px with three combinations a few rasterise alike by chance, but no split is copied.
    assert sum(image in others for image in drawn.values()) < len(drawn) // 10
    for e in validation:
        assert "red circle" not in e["conversations"][0]["value"]
        if e["question_type"] == "shape" and e["conversations"][1]["value"] == "circle":
            pixels = set(map(tuple, np.asarray(Image.open(root / e["image"]).convert("RGB")).reshape(-1, 3).tolist()))
            assert COLOURS["red"] not in pixels
    assert ensure_generated(make(tmp_path), progress=False) != root  # a set without validation keeps its own key
    assert "num_validation" not in make(tmp_path).generation_params()


def test_held_out_splits_leave_no_answer_prior_above_chance(tmp_path):
    spec = make(tmp_path, num_train=200, num_test=240, num_validation=120, question_mix=(1.0, 0.1, 3.0))
    root = ensure_generated(spec, progress=False)
    for split in ("validation", "test"):
        data = entries(root, split)
        for qtype, answers in (("colour", spec.colours), ("shape", spec.shapes)):
            counts = collections.Counter(e["conversations"][1]["value"] for e in data if e["question_type"] == qtype)
            assert set(counts) == set(answers) and max(counts.values()) - min(counts.values()) <= 1, (split, counts)
        # Every yes/no question is asked once of an image showing the object and once of one that does not.
        asked = collections.Counter((e["conversations"][0]["value"], e["conversations"][1]["value"])
                                    for e in data if e["question_type"] == "presence")
        assert {q for q, _ in asked} and all(asked[q, "yes"] == asked[q, "no"] for q, _ in asked)
        for e in data:
            if e["question_type"] == "presence":
                words = e["conversations"][0]["value"].removeprefix("<image>\n").rstrip("?").split()[3:]
                [(colour, shape)] = [o.split() for o in e["objects"]]
                shown = words == [colour, shape] if len(words) == 2 else words == [shape]
                assert shown == (e["conversations"][1]["value"] == "yes"), e
    train = collections.Counter(e["question_type"] for e in entries(root, "train"))
    assert train["presence"] > train["colour"] > train["shape"]  # the mix weights the train split only


def _negatives(data: list[dict]) -> collections.Counter:
    """How each 'Is there a {colour} {shape}?' answered no relates to the drawn object."""
    kinds = collections.Counter()
    for e in data:
        words = e["conversations"][0]["value"].removeprefix("<image>\n").rstrip("?").split()[3:]
        if e["question_type"] != "presence" or len(words) != 2 or e["conversations"][1]["value"] != "no":
            continue
        [drawn] = [o.split() for o in e["objects"]]
        kinds["same colour" if words[0] == drawn[0] else "same shape" if words[1] == drawn[1] else "both differ"] += 1
    return kinds


def test_hard_negatives_share_the_colour_or_the_shape_in_train_only(tmp_path):
    uniform = _negatives(entries(ensure_generated(make(tmp_path, num_train=1200), progress=False), "train"))
    assert uniform["both differ"] > uniform["same shape"] + uniform["same colour"]  # 15 of the 23 other objects
    spec = make(tmp_path, num_train=1200, num_validation=300, num_test=300, hard_negatives=1.0)
    root = ensure_generated(spec, progress=False)
    hard = _negatives(entries(root, "train"))
    assert hard["both differ"] == 0 and hard["same shape"] > 20 and hard["same colour"] > 20
    for split in ("validation", "test"):  # measured as without them
        assert _negatives(entries(root, split))["both differ"] > 0
    half = _negatives(entries(ensure_generated(make(tmp_path, num_train=1200, hard_negatives=0.5),
                                               progress=False), "train"))
    assert 0 < half["both differ"] < uniform["both differ"]
    assert "hard_negatives" not in make(tmp_path).generation_params()  # unset: earlier sets keep their key
    with pytest.raises(SpecError, match=r"hard_negatives: must be in \[0, 1\], got 1.5"):
        structure({"kind": "synthetic-shapes", "hard_negatives": 1.5}, DatasetSpec)


def test_each_entry_names_the_objects_its_image_shows(tmp_path):
    spec = make(tmp_path, num_train=120, image_size=64, question_types=("colour", "count"))
    root = ensure_generated(spec, progress=False)
    for e in entries(root, "train"):
        objects = [tuple(o.split()) for o in e["objects"]]
        assert objects and all(c in spec.colours and s in spec.shapes for c, s in objects)
        answer = e["conversations"][1]["value"]
        if e["question_type"] == "colour":
            assert objects == [(answer, objects[0][1])]
        else:
            asked = e["conversations"][0]["value"].split()[-3]
            assert sum(plural(s) == asked for _, s in objects) == ("zero", "one", "two", "three").index(answer)


def test_count_questions_use_plural_words_and_number_answers(tmp_path):
    spec = make(tmp_path, num_train=80, image_size=64, question_types=("count",), shapes=("circle", "cross"))
    for e in entries(ensure_generated(spec, progress=False), "train"):
        q, a = (t["value"] for t in e["conversations"])
        assert q.endswith(("How many circles are there?", "How many crosses are there?"))
        assert a in ("one", "two", "three")
    assert plural("cross") == "crosses" and "crosses" in vocabulary(spec)


def test_count_distractors_bound_the_other_shapes_in_a_count_scene(tmp_path):
    def others_per_scene(**kw) -> collections.Counter:
        spec = make(tmp_path, num_train=150, image_size=64, question_types=("count",), **kw)
        data = entries(ensure_generated(spec, progress=False), "train")
        asked = [e["conversations"][0]["value"].split()[-3] for e in data]  # "How many circles are there?"
        return collections.Counter(sum(plural(o.split()[1]) != plural_asked for o in e["objects"])
                                   for e, plural_asked in zip(data, asked, strict=True))

    assert set(others_per_scene()) == {0, 1, 2}  # the default: up to two shapes of other kinds
    assert set(others_per_scene(count_distractors=0)) == {0}
    assert "count_distractors" not in make(tmp_path).generation_params()  # the default keeps earlier sets' key
    assert make(tmp_path, count_distractors=0).generation_params()["count_distractors"] == 0


def test_bad_specs_are_rejected_with_the_field():
    with pytest.raises(SpecError) as err:
        structure({"kind": "synthetic-shapes", "background": "red", "shapes": ["blob"], "held_out": ["green"],
                   "question_mix": [1.0]}, DatasetSpec)
    text = str(err.value)
    assert "background" in text and "blob" in text and "held_out[0]" in text and "question_mix" in text


def _dataset_for(spec: ShapesSpec, split: str = "train"):
    tokenizer = word_tokenizer([*vocabulary(spec), "USER", "ASSISTANT"])
    return spec.build(tokenizer=tokenizer, prompt_format=ToyPromptFormat(), image_transform=image_transform(),
                      split=split)


def test_dataset_exposes_question_types_and_splits(tmp_path):
    spec = make(tmp_path)
    ds = _dataset_for(spec, "test")
    assert len(ds) == 32 and len(ds.question_types()) == 32
    assert ds[0].source == "shapes/test.json#0" and ds[0].has_image
    assert ds.answer(0) == ds.records[0].turns[-1].message
    with pytest.raises(ValueError, match=r"splits 'train' and 'test', not 'validation' \(set num_validation"):
        _dataset_for(spec, "validation")
    assert len(_dataset_for(make(tmp_path, num_validation=12), "validation")) == 12


def test_examples_are_decoded_once_when_kept_in_memory(tmp_path, monkeypatch):
    import prism_core.data.conversations as conversations

    kept, fresh = _dataset_for(make(tmp_path)), _dataset_for(make(tmp_path, keep_in_memory=False))
    first = kept[3]
    original, opened = conversations.load_image, []
    monkeypatch.setattr(conversations, "load_image", lambda *a: opened.append(a) or original(*a))
    assert kept[3] is first and opened == []  # served from memory: no file read again
    fresh[3], fresh[3]
    assert len(opened) == 2  # without it, every access decodes the image again


class TestShapesConformance(DatasetConformance):
    spec = ShapesSpec.from_preset("shapes-tiny")

    @pytest.fixture
    def dataset(self, tmp_path):
        return _dataset_for(ShapesSpec.from_preset("shapes-tiny", cache_dir=str(tmp_path)))
