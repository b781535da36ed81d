"""Multiple choice, answered by the probabilities of the option letters: TallyQA (counts 0-15 as options A-P) and
AI2D (each question's own options)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prism_core.data import DataError
from prism_core.types import EvalExample
from prism_plugin_vlm_eval import metrics, prompts
from prism_plugin_vlm_eval.files import field, json_entries, missing, read_json, string_list
from prism_plugin_vlm_eval.tasks import Benchmark, probabilities, record

Records = Sequence[Mapping[str, Any]]


class _Choice(Benchmark):
    """Rows are grouped by their number of options: one scoring call per group."""

    def predict(self, vlm: Any, examples: Sequence[EvalExample], pixel_values: Sequence[Any]) -> list[dict]:
        out: list[dict | None] = [None] * len(examples)
        for count in sorted({len(e.fields["choices"]) for e in examples}):
            rows = [i for i, e in enumerate(examples) if len(e.fields["choices"]) == count]
            asked = [prompts.prompt(vlm, prompts.multiple_choice(examples[i].fields["question"],
                                                                 examples[i].fields["choices"])) for i in rows]
            scored = probabilities(vlm, asked, [pixel_values[i] for i in rows], prompts.letters(count))
            for i, p in zip(rows, scored, strict=True):
                out[i] = record(examples[i], probabilities=p, prediction=metrics.argmax(p))
        return [r for r in out if r is not None]

    def score(self, records: Records) -> dict[str, Any]:
        def correct(r: Mapping[str, Any]) -> float:
            return float(r["prediction"] == r["answer"])

        return {"accuracy": metrics.mean([correct(r) for r in records]),
                "by_split": metrics.grouped_accuracy(records, "split", correct)}


TALLY_CHOICES = [str(n) for n in range(16)]


class TallyQATask(_Choice):
    """TallyQA's ``test.json``: ``[{"image", "question", "answer": 0-15, "issimple", "question_id"}]``; accuracy
    overall and for the simple and complex questions (``by_split``)."""

    def __init__(self, spec: Any, folder: Path) -> None:
        examples = []
        for _, where, entry in json_entries(folder / spec.annotations, spec.kind, list, "questions"):
            answer = field(entry, "answer", int, where)
            if not 0 <= answer < len(TALLY_CHOICES):
                raise DataError(f"{where}: field 'answer' must be a count from 0 to 15, got {answer}")
            examples.append(EvalExample(str(field(entry, "question_id", int, where)),
                                        str(folder / spec.images / field(entry, "image", str, where)),
                                        {"question": field(entry, "question", str, where), "choices": TALLY_CHOICES,
                                         "answer": answer,
                                         "split": "simple" if field(entry, "issimple", bool, where) else "complex"},
                                        where))
        super().__init__(spec.kind, examples)


class AI2DTask(_Choice):
    """AI2D's ``questions/*.json``: ``{"imageName", "questions": {TEXT: {"answerTexts", "correctAnswer",
    "questionId"}}}``, split into test and val by ``ai2d_test_ids.csv`` (``by_split``)."""

    def __init__(self, spec: Any, folder: Path) -> None:
        question_dir = folder / spec.questions
        if not question_dir.is_dir():
            raise missing(question_dir, spec.kind)
        test_ids = set() if spec.test_ids is None else _read_ids(folder / spec.test_ids, spec.kind)
        examples = []
        for path in sorted(question_dir.glob("*.json")):
            diagram = read_json(path, spec.kind)
            try:
                diagram_id = int(path.name.split(".")[0])
            except ValueError:
                raise DataError(f"{path}: AI2D question files are named after their diagram's number") from None
            image = field(diagram, "imageName", str, str(path))
            for text, question in field(diagram, "questions", dict, str(path)).items():
                where = f"{path}#{text}"
                choices = string_list(question, "answerTexts", where)
                answer = field(question, "correctAnswer", int, where)
                if not 0 <= answer < len(choices):
                    raise DataError(f"{where}: 'correctAnswer' {answer} is not one of its {len(choices)} options")
                examples.append(EvalExample(field(question, "questionId", str, where),
                                            str(folder / spec.images / image),
                                            {"question": text, "choices": choices, "answer": answer,
                                             "split": "test" if diagram_id in test_ids else "val"}, where))
        super().__init__(spec.kind, examples)


def _read_ids(path: Path, kind: str) -> set[int]:
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = [row for row in csv.reader(file) if row]
    except FileNotFoundError:
        raise missing(path, kind) from None
    try:
        return {int(row[0]) for row in rows}
    except ValueError as exc:
        raise DataError(f"{path}: expected one diagram number per line ({exc})") from None
