"""Exact-match evaluation of a VLM on a held-out conversation data set, with a blind control.

Each example's last assistant turn is the reference answer; the turns before it are the prompt. The model answers
with greedy, batched generation. The *blind control* asks the same questions with every image replaced by zeros
and lets the model choose among the valid answers of each question type (every answer the split holds for that
type), by their probabilities: its choice then reflects answer priors alone, so a model that really looks at images
falls to chance there. (Free generation on a zeroed image is reported too, as ``blind_generation``: a model that
never saw an empty image may answer with no valid answer at all, which says little about its priors.)
Works on any data set whose examples are LLaVA-style conversations (``dataset.records``, as the first-party data
plugins provide); accuracy is reported per question type when records carry one (``extra["question_type"]``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from prism_core.types import ASSISTANT


def normalise_answer(text: str) -> str:
    """Case, surrounding whitespace and trailing punctuation do not count against an answer."""
    return text.strip().lower().rstrip(".!").strip()


def _items(dataset: Any, max_examples: int | None) -> list[tuple[Any, Sequence[Any], str, str]]:
    records = getattr(dataset, "records", None)
    if records is None:
        raise TypeError(f"{type(dataset).__name__} has no conversation records: exact-match evaluation needs a "
                        "LLaVA-style conversation data set")
    items = []
    for record in records[:max_examples]:
        if not record.turns or record.turns[-1].role != ASSISTANT:
            raise ValueError(f"{record.source}: the last turn must be the assistant's reference answer")
        question_type = record.extra.get("question_type", "all")
        items.append((record, record.turns[:-1], record.turns[-1].message, question_type))
    if not items:
        raise ValueError("the evaluation split is empty")
    return items


def _summary(correct: dict[str, list[bool]]) -> dict[str, Any]:
    everything = [c for values in correct.values() for c in values]
    return {
        "accuracy": sum(everything) / len(everything),
        "num_examples": len(everything),
        "by_type": {t: {"accuracy": sum(v) / len(v), "num_examples": len(v)} for t, v in sorted(correct.items())},
    }


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
    """Accuracy overall and per question type, the blind control, and chance per type."""
    import torch

    from prism_core.data.conversations import load_image

    items = _items(dataset, max_examples)
    transform = vlm.vision_backbone.image_transform
    answers_by_type: dict[str, Counter[str]] = defaultdict(Counter)
    spelled: dict[str, dict[str, str]] = {}  # how each answer is written in the data, for scoring it
    for _, _, answer, question_type in items:
        answers_by_type[question_type][normalise_answer(answer)] += 1
        spelled.setdefault(question_type, {}).setdefault(normalise_answer(answer), answer.strip())
    modes = ("with_image", "blind", "blind_generation") if blind_control else ("with_image",)
    correct: dict[str, dict[str, list[bool]]] = {mode: defaultdict(list) for mode in modes}
    candidates = {t: sorted(forms.values()) for t, forms in spelled.items()}
    samples: list[dict[str, str]] = []
    was_training = vlm.training
    vlm.eval()
    bar = tqdm(total=len(items) * len(modes), desc="evaluating", unit="q", disable=not progress)
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            prompts = [vlm.prompt_format.prompt(turns) for _, turns, _, _ in chunk]
            pixels = [None if record.image is None else transform(load_image(record.image, record.source))
                      for record, _, _, _ in chunk]
            blank = [None if p is None else _zeros_like(p) for p in pixels]
            for mode in modes:
                with torch.inference_mode():
                    if mode == "blind":
                        outputs = _choose(vlm, blank, prompts, [t for *_, t in chunk], candidates)
                    else:
                        rows = pixels if mode == "with_image" else blank
                        outputs = vlm.generate_batch(rows, prompts, do_sample=False, max_new_tokens=max_new_tokens)
                for (record, _, answer, question_type), output in zip(chunk, outputs, strict=True):
                    correct[mode][question_type].append(normalise_answer(output) == normalise_answer(answer))
                    if mode == "with_image" and len(samples) < 12:
                        samples.append({"source": record.source, "image": str(record.image or ""),
                                        "question": record.turns[-2].message.replace("<image>", "").strip(),
                                        "answer": answer, "output": output})
                bar.update(len(chunk))
    finally:
        bar.close()
        vlm.train(was_training)
    report = {mode: _summary(values) for mode, values in correct.items()}
    report["chance"] = {t: 1 / len(counts) for t, counts in sorted(answers_by_type.items())}
    report["majority"] = {t: max(c.values()) / sum(c.values()) for t, c in sorted(answers_by_type.items())}
    report["samples"] = samples
    return report


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
