"""Referring expressions: the model writes a box for a sentence; it is correct when the box parses and its IoU with
the reference reaches the threshold. RefCOCO, RefCOCO+, RefCOCOg (COCO boxes) and OCID-Ref (cluttered tables).

Reference boxes are ``[x1, y1, x2, y2]`` divided by the image's width and height and rounded to two decimals, the
form the model is asked to answer in (the original harness's).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prism_core.data import DataError
from prism_core.types import EvalExample
from prism_plugin_vlm_eval import metrics, prompts
from prism_plugin_vlm_eval.files import field, json_entries, read_json, read_plain_pickle
from prism_plugin_vlm_eval.tasks import Benchmark, generate, record

Records = Sequence[Mapping[str, Any]]


def normalised_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int, where: str) -> list[float]:
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise DataError(f"{where}: box [{x1}, {y1}, {x2}, {y2}] does not fit its {width}x{height} image")
    return [round(x1 / width, 2), round(y1 / height, 2), round(x2 / width, 2), round(y2 / height, 2)]


class _Refer(Benchmark):
    group: str = ""  # the field accuracy is broken down by ("" for none)

    def __init__(self, name: str, examples: list[EvalExample], max_new_tokens: int, iou_threshold: float) -> None:
        super().__init__(name, examples)
        self.max_new_tokens, self.iou_threshold = max_new_tokens, iou_threshold

    def predict(self, vlm: Any, examples: Sequence[EvalExample], pixel_values: Sequence[Any]) -> list[dict]:
        asked = [prompts.prompt(vlm, prompts.refer(e.fields["sentence"])) for e in examples]
        answers = generate(vlm, asked, pixel_values, self.max_new_tokens)
        return [record(e, prediction=a) for e, a in zip(examples, answers, strict=True)]

    def score(self, records: Records) -> dict[str, Any]:
        def correct(r: Mapping[str, Any]) -> float:
            box = metrics.parse_box(r["prediction"])
            return float(box is not None and metrics.box_iou(box, r["box"]) >= self.iou_threshold)

        out: dict[str, Any] = {
            "accuracy": metrics.mean([correct(r) for r in records]),
            "invalid": metrics.mean([float(metrics.parse_box(r["prediction"]) is None) for r in records]),
        }
        if self.group:
            out[f"by_{self.group}"] = metrics.grouped_accuracy(records, self.group, correct)
        return out


class RefCOCOTask(_Refer):
    """The REFER layout: ``refs(unc).p`` (``[{"ref_id", "ann_id", "image_id", "split", "sentences": [{"sent_id",
    "sent"}]}]``) and COCO's ``instances.json`` for the boxes (``bbox`` as x, y, width, height) and image sizes.
    Every sentence of every reference in the split is one example."""

    def __init__(self, spec: Any, folder: Path) -> None:
        refs_path, instances_path = folder / spec.refs, folder / spec.instances
        refs = read_plain_pickle(refs_path, spec.kind)
        instances = read_json(instances_path, spec.kind)
        sizes = {}
        for i, image in enumerate(field(instances, "images", list, str(instances_path))):
            where = f"{instances_path}#images[{i}]"
            sizes[field(image, "id", int, where)] = (field(image, "width", int, where),
                                                     field(image, "height", int, where))
        boxes = {}
        for i, annotation in enumerate(field(instances, "annotations", list, str(instances_path))):
            where = f"{instances_path}#annotations[{i}]"
            boxes[field(annotation, "id", int, where)] = (field(annotation, "bbox", list, where), where)
        if not isinstance(refs, list):
            raise DataError(f"{refs_path}: expected a list of references, got {type(refs).__name__}")
        examples = []
        for i, ref in enumerate(refs):
            where = f"{refs_path}#{i}"
            if field(ref, "split", str, where) != spec.split:
                continue
            ref_id, ann_id = field(ref, "ref_id", int, where), field(ref, "ann_id", int, where)
            image_id = field(ref, "image_id", int, where)
            if ann_id not in boxes:
                raise DataError(f"{where}: ann_id {ann_id} is not an annotation of {instances_path}")
            if image_id not in sizes:
                raise DataError(f"{where}: image_id {image_id} is not an image of {instances_path}")
            bbox, bbox_where = boxes[ann_id]
            if len(bbox) != 4 or not all(isinstance(c, (int, float)) for c in bbox):
                raise DataError(f"{bbox_where}: 'bbox' must be 4 numbers (x, y, width, height), got {bbox!r:.60}")
            x, y, w, h = bbox
            box = normalised_box(x, y, x + w, y + h, *sizes[image_id], bbox_where)
            image = str(folder / spec.images / spec.image_name.format(image_id=image_id))
            for j, sentence in enumerate(field(ref, "sentences", list, where)):
                sentence_where = f"{where}.sentences[{j}]"
                examples.append(EvalExample(f"{ref_id}/{field(sentence, 'sent_id', int, sentence_where)}", image,
                                            {"sentence": field(sentence, "sent", str, sentence_where), "box": box},
                                            sentence_where))
        super().__init__(spec.kind, examples, spec.max_new_tokens, spec.iou_threshold)


#: OCID-Ref's clutter levels by the scene's take number: takes 0-9, 10-16 and 17-20.
CLUTTER = ("minimum", "medium", "maximum")
CLUTTER_LAST_TAKE = (9, 16, 20)


class OCIDRefTask(_Refer):
    """OCID-Ref's ``val_expressions.json``: ``{id: {"scene_path", "sentence", "bbox": "[x1, y1, x2, y2]",
    "take_id"}}`` (boxes in pixels of 640 x 480 scenes); accuracy by clutter level too (``by_clutter``)."""

    group = "clutter"

    def __init__(self, spec: Any, folder: Path) -> None:
        examples = []
        for key, where, entry in json_entries(folder / spec.expressions, spec.kind, dict, "expressions keyed by id"):
            bbox = field(entry, "bbox", (str, list), where)
            try:
                bbox = json.loads(bbox) if isinstance(bbox, str) else bbox
                x1, y1, x2, y2 = (float(c) for c in bbox)
            except (ValueError, TypeError):
                raise DataError(f"{where}: 'bbox' must be [x1, y1, x2, y2], got {entry['bbox']!r:.60}") from None
            take = field(entry, "take_id", int, where)
            if not 0 <= take <= CLUTTER_LAST_TAKE[-1]:
                raise DataError(f"{where}: 'take_id' must be in [0, {CLUTTER_LAST_TAKE[-1]}], got {take}")
            examples.append(EvalExample(
                str(key), str(folder / spec.images / field(entry, "scene_path", str, where)),
                {"sentence": field(entry, "sentence", str, where),
                 "box": normalised_box(x1, y1, x2, y2, spec.image_width, spec.image_height, where),
                 "clutter": CLUTTER[bisect.bisect_left(CLUTTER_LAST_TAKE, take)]}, where))
        super().__init__(spec.kind, examples, spec.max_new_tokens, spec.iou_threshold)
