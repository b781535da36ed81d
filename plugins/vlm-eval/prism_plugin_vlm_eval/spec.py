"""Spec classes of the TRI-ML/vlm-evaluation benchmarks (torch-free; each task is imported in ``build``).

A benchmark lives in one folder under the data root (``prism data prepare KIND --root DATA`` lays it out), its
annotation files named as the benchmark publishes them. COCO and Visual Genome images, which several benchmarks
share, live once under ``DATA/coco`` and ``DATA/vg``; an ``images`` field is relative to the benchmark's folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs

from prism_core.spec import EvalTaskSpec, spec_field


@attrs.frozen(kw_only=True)
class BenchmarkSpec(EvalTaskSpec):
    #: Folder under the data root that ``prism data prepare`` fills.
    folder_name: ClassVar[str] = ""

    folder: str | None = spec_field(None, help="the benchmark's folder; a relative one is under the data root "
                                               "(default: the kind's folder under the data root)")

    def folder_path(self, root: str | None) -> Path:
        from prism_core.data import DataError

        folder = Path(self.folder or self.folder_name).expanduser()
        if folder.is_absolute():
            return folder
        if root is None:
            raise DataError(f"{self.kind}: no data root to find {folder}/ under: pass --root DATA (eval.root in a "
                            f"spec), or set the task's folder; `prism data prepare {self.kind} --root DATA` "
                            "downloads it")
        return Path(root).expanduser() / folder

    def required(self) -> tuple[str, ...]:
        """The files and folders the task reads, relative to its folder (``prism data prepare`` checks them)."""
        return ()


@attrs.frozen(kw_only=True)
class GenerationSpec(BenchmarkSpec):
    """A benchmark answered by free generation (greedy)."""

    max_new_tokens: int = spec_field(128, at_least=1, help="tokens generated per answer (the original harness's 128)")



@attrs.frozen(kw_only=True)
class VQAv2Spec(GenerationSpec):
    """VQAv2 val: VQA accuracy against the ten human answers."""

    kind: ClassVar[str] = "vqa-v2"
    folder_name: ClassVar[str] = "vqa-v2"

    questions: str = spec_field("v2_OpenEnded_mscoco_val2014_questions.json", help="questions file")
    annotations: str = spec_field("v2_mscoco_val2014_annotations.json", help="annotations (answers) file")
    images: str = spec_field("../coco/val2014", help="image folder")
    image_name: str = spec_field("COCO_val2014_{image_id:012d}.jpg", help="image file name from the image id")

    def required(self) -> tuple[str, ...]:
        return self.questions, self.annotations, self.images

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.vqa import VQAv2Task

        return VQAv2Task(self, self.folder_path(root))


@attrs.frozen(kw_only=True)
class GQASpec(GenerationSpec):
    """GQA test-dev balanced: exact match."""

    kind: ClassVar[str] = "gqa"
    folder_name: ClassVar[str] = "gqa"

    questions: str = spec_field("testdev_balanced_questions.json", help="questions file (answers included)")
    images: str = spec_field("images", help="image folder")

    def required(self) -> tuple[str, ...]:
        return self.questions, self.images

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.vqa import GQATask

        return GQATask(self, self.folder_path(root))


@attrs.frozen(kw_only=True)
class VizWizSpec(GenerationSpec):
    """VizWiz val: VQA accuracy, and how well the model says 'unanswerable'."""

    kind: ClassVar[str] = "vizwiz"
    folder_name: ClassVar[str] = "vizwiz"

    annotations: str = spec_field("val.json", help="annotations file")
    images: str = spec_field("val", help="image folder")

    def required(self) -> tuple[str, ...]:
        return self.annotations, self.images

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.vqa import VizWizTask

        return VizWizTask(self, self.folder_path(root))


@attrs.frozen(kw_only=True)
class TextVQASpec(GenerationSpec):
    """TextVQA val: VQA accuracy, asked with the OCR tokens of LLaVA-1.5's question file and without them."""

    kind: ClassVar[str] = "text-vqa"
    folder_name: ClassVar[str] = "text-vqa"

    annotations: str = spec_field("TextVQA_0.5.1_val.json", help="annotations file")
    ocr_questions: str | None = spec_field(
        "textvqa_val_v051_ocr.jsonl", help="questions with OCR tokens, line by line with the annotations (None: "
                                           "ask without OCR tokens only)")
    images: str = spec_field("train_images", help="image folder (TextVQA's val images are in its train folder)")

    def required(self) -> tuple[str, ...]:
        return self.annotations, self.images, *((self.ocr_questions,) if self.ocr_questions else ())

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.vqa import TextVQATask

        return TextVQATask(self, self.folder_path(root))


POPE_SPLITS = ("adversarial", "popular", "random")


@attrs.frozen(kw_only=True)
class POPESpec(BenchmarkSpec):
    """POPE (COCO): object hallucination, yes/no by the probabilities of "Yes" and "No"."""

    kind: ClassVar[str] = "pope"
    folder_name: ClassVar[str] = "pope"

    splits: tuple[str, ...] = spec_field(POPE_SPLITS, help="adversarial, popular, random")
    file_name: str = spec_field("coco_pope_{split}.json", help="file of each split (JSON lines)")
    images: str = spec_field("../coco/val2014", help="image folder")

    def problems(self) -> Iterator[tuple[str, str]]:
        unknown = [s for s in self.splits if s not in POPE_SPLITS]
        if unknown or not self.splits or len(set(self.splits)) != len(self.splits):
            yield "splits", f"must be distinct splits among {', '.join(POPE_SPLITS)}, got {list(self.splits)}"

    def required(self) -> tuple[str, ...]:
        return *(self.file_name.format(split=split) for split in self.splits), self.images

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.yes_no import POPETask

        return POPETask(self, self.folder_path(root))


@attrs.frozen(kw_only=True)
class VSRSpec(BenchmarkSpec):
    """VSR zero-shot test: spatial relations, true/false by the probabilities of "True" and "False"."""

    kind: ClassVar[str] = "vsr"
    folder_name: ClassVar[str] = "vsr"

    annotations: str = spec_field("test.jsonl", help="the zero-shot split's test file (JSON lines)")
    images: str = spec_field("images", help="image folder")

    def required(self) -> tuple[str, ...]:
        return self.annotations, self.images

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.yes_no import VSRTask

        return VSRTask(self, self.folder_path(root))


@attrs.frozen(kw_only=True)
class TallyQASpec(BenchmarkSpec):
    """TallyQA test: counting, as a 16-way choice of "0" … "15" by the probabilities of the letters A … P."""

    kind: ClassVar[str] = "tally-qa"
    folder_name: ClassVar[str] = "tally-qa"

    annotations: str = spec_field("test.json", help="test file")
    images: str = spec_field("../vg", help="image folder the entries' image paths start from")

    def required(self) -> tuple[str, ...]:
        return self.annotations, self.images

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.choice import TallyQATask

        return TallyQATask(self, self.folder_path(root))


@attrs.frozen(kw_only=True)
class AI2DSpec(BenchmarkSpec):
    """AI2D: diagram questions, multiple choice by the probabilities of the option letters."""

    kind: ClassVar[str] = "ai2d"
    folder_name: ClassVar[str] = "ai2d"

    questions: str = spec_field("questions", help="folder of per-diagram question files")
    images: str = spec_field("images", help="image folder")
    test_ids: str | None = spec_field("ai2d_test_ids.csv", help="ids of the test diagrams (None: no split)")

    def required(self) -> tuple[str, ...]:
        return self.questions, self.images, *((self.test_ids,) if self.test_ids else ())

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.choice import AI2DTask

        return AI2DTask(self, self.folder_path(root))


@attrs.frozen(kw_only=True)
class ReferSpec(GenerationSpec):
    """Referring expressions: the generated text must be a box, ``[x1, y1, x2, y2]`` normalised to [0, 1]."""

    iou_threshold: float = spec_field(
        0.5, above=0, at_most=1, help="a box is correct when its IoU with the reference reaches this")


@attrs.frozen(kw_only=True)
class RefCOCOSpec(ReferSpec):
    """RefCOCO val (UNC splits): accuracy at IoU >= 0.5."""

    kind: ClassVar[str] = "refcoco"
    folder_name: ClassVar[str] = "refcoco"

    refs: str = spec_field("refs(unc).p", help="references file (a pickle of plain data)")
    instances: str = spec_field("instances.json", help="COCO instances file the references point into")
    split: str = spec_field("val", help="split of the references")
    images: str = spec_field("../coco/train2014", help="image folder")
    image_name: str = spec_field("COCO_train2014_{image_id:012d}.jpg", help="image file name from the image id")

    def required(self) -> tuple[str, ...]:
        return self.refs, self.instances, self.images

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.refer import RefCOCOTask

        return RefCOCOTask(self, self.folder_path(root))


@attrs.frozen(kw_only=True)
class RefCOCOPlusSpec(RefCOCOSpec):
    """RefCOCO+ val (UNC splits): accuracy at IoU >= 0.5."""

    kind: ClassVar[str] = "refcoco+"
    folder_name: ClassVar[str] = "refcoco+"


@attrs.frozen(kw_only=True)
class RefCOCOgSpec(RefCOCOSpec):
    """RefCOCOg val (UMD splits): accuracy at IoU >= 0.5."""

    kind: ClassVar[str] = "refcocog"
    folder_name: ClassVar[str] = "refcocog"

    refs: str = spec_field("refs(umd).p", help="references file (a pickle of plain data)")


@attrs.frozen(kw_only=True)
class OCIDRefSpec(ReferSpec):
    """OCID-Ref val: accuracy at IoU >= 0.25 (the original harness's threshold), by clutter level."""

    kind: ClassVar[str] = "ocid-ref"
    folder_name: ClassVar[str] = "ocid-ref"

    expressions: str = spec_field("val_expressions.json", help="referring expressions file")
    images: str = spec_field("OCID-dataset", help="folder the expressions' scene paths start from")
    iou_threshold: float = spec_field(
        0.25, above=0, at_most=1, help="a box is correct when its IoU with the reference reaches this")
    image_width: int = spec_field(
        640, at_least=1, help="width of every OCID image in pixels (boxes are normalised by it)")
    image_height: int = spec_field(480, at_least=1, help="height of every OCID image in pixels")

    def required(self) -> tuple[str, ...]:
        return self.expressions, self.images

    def build(self, *, root: str | None = None) -> Any:
        from prism_plugin_vlm_eval.tasks.refer import OCIDRefTask

        return OCIDRefTask(self, self.folder_path(root))


SPECS: tuple[type[BenchmarkSpec], ...] = (VQAv2Spec, GQASpec, VizWizSpec, TextVQASpec, POPESpec, VSRSpec, TallyQASpec,
                                          AI2DSpec, RefCOCOSpec, RefCOCOPlusSpec, RefCOCOgSpec, OCIDRefSpec)
