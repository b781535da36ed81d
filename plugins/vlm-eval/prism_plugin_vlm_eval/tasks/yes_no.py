"""Two-answer tasks, answered by the probabilities of the two answers: POPE ("Yes"/"No") and VSR ("True"/"False")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prism_core.data import DataError
from prism_core.types import EvalExample
from prism_plugin_vlm_eval import metrics, prompts
from prism_plugin_vlm_eval.files import field, read_json_lines
from prism_plugin_vlm_eval.tasks import Benchmark, probabilities, record

Records = Sequence[Mapping[str, Any]]


class POPETask(Benchmark):
    """POPE's split files, JSON lines ``{"question_id", "image", "text", "label": "yes" | "no"}``.

    Reported per split (``by_split``) and over the splits: accuracy, precision, recall, F1 and yes-ratio averaged
    over them (the original harness averages accuracy so), ROC AUC and average precision over every answer.
    """

    answers = ("Yes", "No")

    def __init__(self, spec: Any, folder: Path) -> None:
        examples = []
        for split in spec.splits:
            path = folder / spec.file_name.format(split=split)
            for i, entry in enumerate(read_json_lines(path, spec.kind)):
                where = f"{path}#{i}"
                label = field(entry, "label", str, where)
                if label not in ("yes", "no"):
                    raise DataError(f"{where}: field 'label' must be 'yes' or 'no', got {label!r}")
                examples.append(EvalExample(f"{split}/{field(entry, 'question_id', int, where)}",
                                            str(folder / spec.images / field(entry, "image", str, where)),
                                            {"split": split, "question": field(entry, "text", str, where),
                                             "label": label}, where))
        super().__init__(spec.kind, examples)

    def predict(self, vlm: Any, examples: Sequence[EvalExample], pixel_values: Sequence[Any]) -> list[dict]:
        asked = [prompts.prompt(vlm, prompts.vqa(e.fields["question"])) for e in examples]
        scored = probabilities(vlm, asked, pixel_values, self.answers)
        return [record(e, probabilities=p, prediction=("yes", "no")[metrics.argmax(p)])
                for e, p in zip(examples, scored, strict=True)]

    def score(self, records: Records) -> dict[str, Any]:
        by_split = {}
        for split in dict.fromkeys(r["split"] for r in records):
            rows = [r for r in records if r["split"] == split]
            by_split[split] = _binary([r["label"] == "yes" for r in rows], rows, "yes")
        pooled = _binary([r["label"] == "yes" for r in records], records, "yes")
        averaged = {name: metrics.mean([m[name] for m in by_split.values()])
                    for name in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
        return {**averaged, "auroc": pooled["auroc"], "ap": pooled["ap"], "by_split": by_split}


def _binary(labels: list[bool], rows: Records, positive: str) -> dict[str, Any]:
    return metrics.binary_metrics(labels, [r["prediction"] == positive for r in rows],
                                  [r["probabilities"][0] for r in rows])


class VSRTask(Benchmark):
    """VSR's JSON lines ``{"image", "caption", "label": 1 | 0, "relation"}``: accuracy of the more probable of
    "True" and "False", ROC AUC and average precision of "True", and the always-"True" baseline."""

    answers = ("True", "False")

    def __init__(self, spec: Any, folder: Path) -> None:
        path = folder / spec.annotations
        examples = []
        for i, entry in enumerate(read_json_lines(path, spec.kind)):
            where = f"{path}#{i}"
            label = field(entry, "label", int, where)
            if label not in (0, 1):
                raise DataError(f"{where}: field 'label' must be 1 (true) or 0 (false), got {label}")
            examples.append(EvalExample(str(i), str(folder / spec.images / field(entry, "image", str, where)),
                                        {"caption": field(entry, "caption", str, where), "label": bool(label),
                                         "relation": str(entry.get("relation", ""))}, where))
        super().__init__(spec.kind, examples)

    def predict(self, vlm: Any, examples: Sequence[EvalExample], pixel_values: Sequence[Any]) -> list[dict]:
        asked = [prompts.prompt(vlm, prompts.true_false(e.fields["caption"])) for e in examples]
        scored = probabilities(vlm, asked, pixel_values, self.answers)
        return [record(e, probabilities=p, prediction=metrics.argmax(p) == 0)
                for e, p in zip(examples, scored, strict=True)]

    def score(self, records: Records) -> dict[str, Any]:
        labels = [bool(r["label"]) for r in records]
        found = metrics.binary_metrics(labels, [bool(r["prediction"]) for r in records],
                                       [r["probabilities"][0] for r in records])
        return {"accuracy": found["accuracy"], "auroc": found["auroc"], "ap": found["ap"],
                "always_true": metrics.mean([float(label) for label in labels]),
                "by_relation": metrics.grouped_accuracy(records, "relation",
                                                        lambda r: float(bool(r["prediction"]) == bool(r["label"])))}
