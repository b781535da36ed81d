"""Free-form answers: VQAv2, GQA, VizWiz and TextVQA (greedy generation, scored as each benchmark scores)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prism_core.data import DataError
from prism_core.types import EvalExample
from prism_plugin_vlm_eval import metrics, prompts
from prism_plugin_vlm_eval.files import answer_strings, field, json_entries, read_json, read_json_lines
from prism_plugin_vlm_eval.tasks import Benchmark, generate, record

Records = Sequence[Mapping[str, Any]]


class _Generated(Benchmark):
    """Answered by generation from ``prompts.vqa`` (or another message)."""

    message = staticmethod(prompts.vqa)

    def __init__(self, name: str, examples: list[EvalExample], max_new_tokens: int) -> None:
        super().__init__(name, examples)
        self.max_new_tokens = max_new_tokens

    def predict(self, vlm: Any, examples: Sequence[EvalExample], pixel_values: Sequence[Any]) -> list[dict]:
        asked = [prompts.prompt(vlm, self.message(e.fields["question"])) for e in examples]
        answers = generate(vlm, asked, pixel_values, self.max_new_tokens)
        return [record(e, prediction=a) for e, a in zip(examples, answers, strict=True)]


class VQAv2Task(_Generated):
    """Questions and annotations in the VQA format: ``{"questions": [{"question_id", "image_id", "question"}]}``
    and ``{"annotations": [{"question_id", "question_type", "answer_type", "answers": [{"answer"}, ...]}]}``."""

    def __init__(self, spec: Any, folder: Path) -> None:
        qpath, apath = folder / spec.questions, folder / spec.annotations
        questions: dict[int, tuple[str, int]] = {}
        for i, entry in enumerate(field(read_json(qpath, spec.kind), "questions", list, str(qpath))):
            where = f"{qpath}#{i}"
            questions[field(entry, "question_id", int, where)] = (field(entry, "question", str, where),
                                                                  field(entry, "image_id", int, where))
        examples = []
        for i, entry in enumerate(field(read_json(apath, spec.kind), "annotations", list, str(apath))):
            where = f"{apath}#{i}"
            qid = field(entry, "question_id", int, where)
            if qid not in questions:
                raise DataError(f"{where}: question_id {qid} has no question in {qpath}")
            question, image_id = questions[qid]
            examples.append(EvalExample(str(qid), str(folder / spec.images / spec.image_name.format(image_id=image_id)),
                                        {"question": question, "answers": answer_strings(entry, where),
                                         "question_type": str(entry.get("question_type", "")),
                                         "answer_type": str(entry.get("answer_type", ""))}, where))
        super().__init__(spec.kind, examples, spec.max_new_tokens)

    def score(self, records: Records) -> dict[str, Any]:
        def accuracy(r: Mapping[str, Any]) -> float:
            return metrics.vqa_accuracy(r["prediction"], r["answers"])

        return {"accuracy": metrics.mean([accuracy(r) for r in records]),
                "by_answer_type": metrics.grouped_accuracy(records, "answer_type", accuracy),
                "by_question_type": metrics.grouped_accuracy(records, "question_type", accuracy)}


class GQATask(_Generated):
    """GQA's questions file: ``{qid: {"imageId", "question", "answer", "isBalanced", "types": {"structural",
    "semantic"}}}``; only balanced questions are scored (as GQA's evaluation does), so only they are asked."""

    def __init__(self, spec: Any, folder: Path) -> None:
        examples = []
        for qid, where, entry in json_entries(folder / spec.questions, spec.kind, dict,
                                              "questions keyed by question id"):
            if not field(entry, "isBalanced", bool, where):
                continue
            types = field(entry, "types", dict, where)
            examples.append(EvalExample(
                str(qid), str(folder / spec.images / f"{field(entry, 'imageId', str, where)}.jpg"),
                {"question": field(entry, "question", str, where), "answer": field(entry, "answer", str, where),
                 "structural": field(types, "structural", str, f"{where}.types"),
                 "semantic": field(types, "semantic", str, f"{where}.types")}, where))
        super().__init__(spec.kind, examples, spec.max_new_tokens)

    def score(self, records: Records) -> dict[str, Any]:
        def correct(r: Mapping[str, Any]) -> float:
            return float(metrics.gqa_prediction(r["prediction"]) == r["answer"])

        # GQA calls a question "open" when its structural type is "query", "binary" otherwise.
        with_kind = [{**r, "kind": "open" if r["structural"] == "query" else "binary"} for r in records]
        by_kind = metrics.grouped_accuracy(with_kind, "kind", correct)
        return {"accuracy": metrics.mean([correct(r) for r in records]), **by_kind,
                "by_structural": metrics.grouped_accuracy(records, "structural", correct),
                "by_semantic": metrics.grouped_accuracy(records, "semantic", correct)}


class VizWizTask(_Generated):
    """VizWiz's ``val.json``: ``[{"image", "question", "answers": [{"answer"}, ...], "answerable"}]``."""

    message = staticmethod(prompts.vqa_unanswerable)

    def __init__(self, spec: Any, folder: Path) -> None:
        examples = []
        for _, where, entry in json_entries(folder / spec.annotations, spec.kind, list, "questions"):
            image = field(entry, "image", str, where)
            answerable = field(entry, "answerable", int, where)
            if answerable not in (0, 1):
                raise DataError(f"{where}: field 'answerable' must be 0 or 1, got {answerable}")
            examples.append(EvalExample(image, str(folder / spec.images / image),
                                        {"question": field(entry, "question", str, where),
                                         "answers": answer_strings(entry, where), "answerable": answerable}, where))
        super().__init__(spec.kind, examples, spec.max_new_tokens)

    def score(self, records: Records) -> dict[str, Any]:
        # VizWiz compares human answers as they are, and restores contractions with its own table.
        def accuracy(r: Mapping[str, Any]) -> float:
            return metrics.vqa_accuracy(r["prediction"], r["answers"], process_answer=str,
                                        contractions=metrics.CONTRACTIONS_VIZWIZ)

        unanswerable = [r["answerable"] == 0 for r in records]
        said_unanswerable = [metrics.normalize_answer(r["prediction"], metrics.CONTRACTIONS_VIZWIZ) == "unanswerable"
                             for r in records]
        by_answerable = metrics.grouped_accuracy(records, "answerable", accuracy)
        return {"accuracy": metrics.mean([accuracy(r) for r in records]),
                "answerable_accuracy": by_answerable.get("1"), "unanswerable_accuracy": by_answerable.get("0"),
                "unanswerable_ap": metrics.average_precision(unanswerable, [float(s) for s in said_unanswerable]),
                "unanswerable_f1": metrics.binary_metrics(unanswerable, said_unanswerable)["f1"]}


OCR_MARK = "\nReference OCR token:"


class TextVQATask(_Generated):
    """TextVQA's ``{"data": [{"question_id", "question", "image_id", "answers"}]}``, and LLaVA-1.5's questions with
    OCR tokens (JSON lines ``{"text": "QUESTION\\nReference OCR token: ..."}``, line i for entry i). Every question
    is asked twice: with the OCR tokens (``accuracy``) and without (``accuracy_pure``)."""

    def __init__(self, spec: Any, folder: Path) -> None:
        path = folder / spec.annotations
        entries = field(read_json(path, spec.kind), "data", list, str(path))
        ocr_path = None if spec.ocr_questions is None else folder / spec.ocr_questions
        ocr = None if ocr_path is None else read_json_lines(ocr_path, spec.kind)
        if ocr is not None and len(ocr) != len(entries):
            raise DataError(f"{ocr_path}: {len(ocr)} questions for the {len(entries)} entries of {path} (line i "
                            "belongs to entry i)")
        examples = []
        for i, entry in enumerate(entries):
            where = f"{path}#{i}"
            image_id = field(entry, "image_id", str, where)
            question = field(entry, "question", str, where)
            fields: dict[str, Any] = {"question": question, "answers": answer_strings(entry, where)}
            if ocr is not None:
                ocr_where = f"{ocr_path} line {i + 1}"
                text = field(ocr[i], "text", str, ocr_where)
                image = ocr[i].get("image")
                if isinstance(image, str) and Path(image).stem != image_id:
                    raise DataError(f"{ocr_where}: image {image!r} is not entry {i}'s image {image_id!r} (the two "
                                    "files must list the questions in the same order)")
                fields = {**fields, "question": text, "question_pure": text.split(OCR_MARK)[0]}
            examples.append(EvalExample(str(field(entry, "question_id", int, where)),
                                        str(folder / spec.images / f"{image_id}.jpg"), fields, where))
        super().__init__(spec.kind, examples, spec.max_new_tokens)
        self.with_ocr = ocr is not None

    def predict(self, vlm: Any, examples: Sequence[EvalExample], pixel_values: Sequence[Any]) -> list[dict]:
        records = super().predict(vlm, examples, pixel_values)
        if self.with_ocr:
            asked = [prompts.prompt(vlm, prompts.vqa(e.fields["question_pure"])) for e in examples]
            for r, answer in zip(records, generate(vlm, asked, pixel_values, self.max_new_tokens), strict=True):
                r["prediction_pure"] = answer
        return records

    def score(self, records: Records) -> dict[str, Any]:
        out = {"accuracy": metrics.mean([metrics.textvqa_accuracy(r["prediction"], r["answers"]) for r in records])}
        if self.with_ocr:
            out["accuracy_pure"] = metrics.mean([metrics.textvqa_accuracy(r["prediction_pure"], r["answers"])
                                                 for r in records])
        return out
