"""Exact match on a held-out conversation data set, with a blind control: an ``EvalTask`` over any data set whose
examples are LLaVA-style conversations (``dataset.records``, as the first-party data plugins provide).

Each example's last assistant turn is the reference answer; the turns before it are the prompt. The model answers
with greedy, batched generation. The *blind control* asks the same questions with every image replaced by zeros
and lets the model choose among the valid answers of each question type (every answer the split holds for that
type), by their probabilities: its choice then reflects answer priors alone, so a model that really looks at images
falls to chance there. (Free generation on a zeroed image is reported too, as ``blind_generation``: a model that
never saw an empty image may answer with no valid answer at all, which says little about its priors.)
Accuracy is reported per question type when records carry one (``extra["question_type"]``).

``evaluate_run`` is what ``prism eval RUN_DIR`` and ``prism-run`` do after training: the spec's ``[eval.data]`` (or
``[data]``) split through this task, written to ``eval.json``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from prism_core.types import ASSISTANT, EvalExample

#: How many answered examples the report keeps, to show what the model says.
NUM_SAMPLES = 12


def normalise_answer(text: str) -> str:
    """Case, surrounding whitespace and trailing punctuation do not count against an answer."""
    return text.strip().lower().rstrip(".!").strip()


class ConversationTask:
    """``EvalTask``: generated answers scored by exact match, plus the blind control (see the module docstring)."""

    headline = "accuracy"

    def __init__(self, records: Sequence[Any], *, name: str = "conversations", max_new_tokens: int = 8,
                 blind_control: bool = True, max_examples: int | None = None) -> None:
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.blind_control = blind_control
        self.records = list(records[:max_examples])
        if not self.records:
            from prism_core.data import DataError

            raise DataError(f"{name}: the evaluation split is empty")
        for record in self.records:
            if not record.turns or record.turns[-1].role != ASSISTANT:
                from prism_core.data import DataError

                raise DataError(f"{record.source}: the last turn must be the assistant's reference answer")
        # The blind control chooses among each question type's answers, spelled as the data spells them.
        spelled: dict[str, dict[str, str]] = {}
        for record in self.records:
            answer = record.turns[-1].message
            spelled.setdefault(_type_of(record), {}).setdefault(normalise_answer(answer), answer.strip())
        self.candidates = {t: sorted(forms.values()) for t, forms in spelled.items()}

    @classmethod
    def from_dataset(cls, dataset: Any, **options: Any) -> ConversationTask:
        records = getattr(dataset, "records", None)
        if records is None:
            raise TypeError(f"{type(dataset).__name__} has no conversation records: exact-match evaluation needs a "
                            "LLaVA-style conversation data set")
        return cls(records, **options)

    def examples(self) -> list[EvalExample]:
        return [EvalExample(str(i), None if r.image is None else str(r.image),
                            {"question_type": _type_of(r), "answer": r.turns[-1].message}, r.source)
                for i, r in enumerate(self.records)]

    def predict(self, vlm: Any, examples: Sequence[EvalExample], pixel_values: Sequence[Any]) -> list[dict[str, Any]]:
        records = [self.records[int(e.id)] for e in examples]
        prompts = [vlm.prompt_format.prompt(r.turns[:-1]) for r in records]
        greedy = {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        outputs = {"output": vlm.generate_batch(list(pixel_values), prompts, **greedy)}
        if self.blind_control:
            blank = [None if p is None else _zeros_like(p) for p in pixel_values]
            outputs["blind"] = _choose(vlm, blank, prompts, [e.fields["question_type"] for e in examples],
                                       self.candidates)
            outputs["blind_generation"] = vlm.generate_batch(blank, prompts, **greedy)
        return [{"id": e.id, "source": r.source, "image": e.image or "",
                 "question": r.turns[-2].message.replace("<image>", "").strip() if len(r.turns) > 1 else "",
                 **e.fields, **{mode: answers[i] for mode, answers in outputs.items()}}
                for i, (e, r) in enumerate(zip(examples, records, strict=True))]

    def score(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Accuracy overall and per question type (with the image, blind, blind generation), chance and majority
        per type, and the first answered examples."""
        modes = {"with_image": "output"}
        if self.blind_control:
            modes |= {"blind": "blind", "blind_generation": "blind_generation"}
        correct: dict[str, dict[str, list[bool]]] = {mode: defaultdict(list) for mode in modes}
        answers_by_type: dict[str, Counter[str]] = defaultdict(Counter)
        for record in records:
            answer = normalise_answer(record["answer"])
            answers_by_type[record["question_type"]][answer] += 1
            for mode, key in modes.items():
                correct[mode][record["question_type"]].append(normalise_answer(record[key]) == answer)
        report: dict[str, Any] = {mode: _summary(values) for mode, values in correct.items()}
        report["accuracy"] = report["with_image"]["accuracy"]
        report["chance"] = {t: 1 / len(counts) for t, counts in sorted(answers_by_type.items())}
        report["majority"] = {t: max(c.values()) / sum(c.values()) for t, c in sorted(answers_by_type.items())}
        first = sorted(records, key=lambda r: int(r["id"]))[:NUM_SAMPLES]  # in example order, however gathered
        report["samples"] = [{k: r[k] for k in ("source", "image", "question", "answer", "output")} for r in first]
        return report


def _type_of(record: Any) -> str:
    return str(record.extra.get("question_type", "all"))


def _summary(correct: Mapping[str, list[bool]]) -> dict[str, Any]:
    everything = [c for values in correct.values() for c in values]
    return {
        "accuracy": sum(everything) / len(everything),
        "num_examples": len(everything),
        "by_type": {t: {"accuracy": sum(v) / len(v), "num_examples": len(v)} for t, v in sorted(correct.items())},
    }


def _choose(vlm: Any, pixels: list[Any], prompts: list[str], types: list[str],
            candidates: dict[str, list[str]]) -> list[str]:
    """Per row, the most probable of its question type's valid answers (one scoring call per type)."""
    chosen = [""] * len(prompts)
    for question_type in sorted(set(types)):
        rows = [i for i, t in enumerate(types) if t == question_type]
        options = candidates[question_type]
        probabilities = vlm.generate_batch([pixels[i] for i in rows], [prompts[i] for i in rows],
                                           return_string_probabilities=options)
        for i, probs in zip(rows, probabilities, strict=True):
            chosen[i] = options[max(range(len(options)), key=probs.__getitem__)]
    return chosen


def _zeros_like(pixels: Any) -> Any:
    import torch

    if isinstance(pixels, dict):
        return {k: torch.zeros_like(v) for k, v in pixels.items()}
    return torch.zeros_like(pixels)


def evaluate_exact_match(
    vlm: Any,
    dataset: Any,
    *,
    batch_size: int = 64,
    max_new_tokens: int = 8,
    max_examples: int | None = None,
    blind_control: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Accuracy overall and per question type, the blind control, and chance per type, on ``dataset``."""
    from prism_core.evaluation import run_task

    task = ConversationTask.from_dataset(dataset, max_new_tokens=max_new_tokens, blind_control=blind_control,
                                         max_examples=max_examples, name="evaluating")
    result = run_task(vlm, task, batch_size=batch_size, progress=progress)
    assert result is not None
    return result.metrics


def format_report(report: dict[str, Any]) -> str:
    """A short table: accuracy per question type with the image, blind (choice among valid answers, and free
    generation), and at chance."""
    with_image = report["with_image"]
    columns = [m for m in ("blind", "blind_generation") if m in report]
    header = f"{'question type':<16}{'accuracy':>10}" + "".join(
        f"{'blind' if m == 'blind' else 'blind gen':>11}" for m in columns) + f"{'chance':>9}{'n':>7}"
    lines = [header]
    for question_type, figures in with_image["by_type"].items():
        cells = "".join(f"{report[m]['by_type'][question_type]['accuracy']:>11.1%}" for m in columns)
        lines.append(f"{question_type:<16}{figures['accuracy']:>10.1%}{cells}"
                     f"{report['chance'][question_type]:>9.1%}{figures['num_examples']:>7}")
    chance_all = sum(report["chance"][t] * f["num_examples"] for t, f in with_image["by_type"].items()) / \
        with_image["num_examples"]
    cells = "".join(f"{report[m]['accuracy']:>11.1%}" for m in columns)
    lines.append(f"{'overall':<16}{with_image['accuracy']:>10.1%}{cells}{chance_all:>9.1%}"
                 f"{with_image['num_examples']:>7}")
    return "\n".join(lines)


def evaluate_run(run_dir: Any, *, vlm: Any = None, split: str | None = None, max_examples: int | None = None,
                 progress: bool = True) -> tuple[dict[str, Any], Any]:
    """Evaluate a run directory's model on its spec's evaluation data; write ``eval.json`` (``eval-SPLIT.json``
    for a split other than the spec's). Returns (report, path written)."""
    import json
    from pathlib import Path

    from prism_core.train.run_dir import load_run_spec

    run_dir = Path(run_dir)
    spec = load_run_spec(run_dir)
    settings = spec.eval
    data = (settings.data if settings and settings.data else None) or spec.data
    if data is None:
        raise ValueError(f"{run_dir / 'spec.toml'}: no [eval.data] or [data] table to evaluate on")
    default_split = settings.split if settings else "test"
    split = split or default_split
    if vlm is None:
        from prism_core.io import load

        vlm = load(run_dir / "model")
    dataset = data.build(tokenizer=vlm.tokenizer, prompt_format=vlm.prompt_format,
                         image_transform=vlm.image_transform, split=split)
    report = evaluate_exact_match(
        vlm, dataset, batch_size=settings.batch_size if settings else 64,
        max_new_tokens=settings.max_new_tokens if settings else 8,
        max_examples=max_examples if max_examples is not None else (settings.max_examples if settings else None),
        progress=progress,
    )
    report = {"split": split, **report}
    path = run_dir / ("eval.json" if split == default_split else f"eval-{split}.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return report, path
