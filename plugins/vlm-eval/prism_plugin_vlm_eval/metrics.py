"""The benchmarks' metrics, as their official evaluation code defines them (no torch, no numpy).

- VQA accuracy (VQAv2, VizWiz, TextVQA): the answer is normalised (punctuation, number words to digits, articles
  dropped, contractions restored), then scored against the human answers leave-one-out: for each of the n answers,
  ``min(#other answers equal to it / 3, 1)``, averaged over the n.
- GQA: exact match after stripping punctuation and lower-casing the prediction.
- Yes/no and true/false (POPE, VSR): accuracy, precision, recall, F1 and yes-ratio of the argmax answer, and ROC AUC
  and average precision of the "yes" probability.
- Referring expressions: a box parsed from the generated text, ``[x1, y1, x2, y2]`` normalised to [0, 1], is correct
  when its IoU with the reference reaches the threshold; text that is no such box counts as wrong.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# -- answer normalisation (the VQA evaluation's processPunctuation / processDigitArticle) ------------------------
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?",
               "!")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset(("a", "an", "the"))
_PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")

#: Contractions as the VQA evaluation restores them. Each form is also written without one of its apostrophes
#: (``dont`` → ``don't``; ``couldn'tve`` and ``couldnt've`` → ``couldn't've``), a one-apostrophe form without it.
_CONTRACTED = (
    "'ow's'at", "'twas", "I'd've", "I'm", "I've", "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've",
    "didn't", "doesn't", "don't", "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd",
    "how'll", "how's", "isn't", "it'd", "it'd've", "it'll", "ma'am", "might've", "mightn't", "mightn't've", "must've",
    "mustn't", "needn't", "not've", "o'clock", "oughtn't", "shan't", "she'd've", "should've", "shouldn't",
    "shouldn't've", "somebody'd've", "somebody'll", "somebody's", "someone'd", "someone'd've", "someone'll",
    "someone's", "something'd", "something'd've", "something'll", "that's", "there'd", "there'd've", "there're",
    "there's", "they'd", "they'd've", "they'll", "they're", "they've", "wasn't", "we'd've", "we've", "weren't",
    "what'll", "what're", "what's", "what've", "when's", "where'd", "where's", "where've", "who'd", "who'd've",
    "who'll", "who's", "who've", "why'll", "why're", "why's", "won't", "would've", "wouldn't", "wouldn't've", "y'all",
    "y'all'd've", "y'all'll", "you'd", "you'd've", "you'll", "you're", "you've"
)


def _contractions(quote: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for form in _CONTRACTED:
        form = form.replace("'", quote)
        marks = [i for i, c in enumerate(form) if c == quote]
        if len(marks) == 1:
            table[form.replace(quote, "")] = form
        else:
            for i in marks:
                table[form[:i] + form[i + 1:]] = form
    # Quirks of the official table, kept: two forms map to themselves, one loses its apostrophe.
    table.update({f"let{quote}s": f"let{quote}s", f"she{quote}s": f"she{quote}s",
                  f"somebody{quote}d": "somebodyd"})
    return table


CONTRACTIONS = _contractions("'")
#: VizWiz's evaluation writes most of its contractions with backticks (``dont`` → ``don`t``), so a contraction in
#: a prediction never matches a human answer there; its scores are reproduced with its table as it is.
CONTRACTIONS_VIZWIZ = {k: v for k, v in _contractions("`").items() if k not in ("couldn`tve", "hadn`tve")} | {
    "couldn'tve": "couldn`t`ve", "hadn'tve": "hadn`t`ve",
    **{form.replace("'", ""): form
       for form in ("ain't", "aren't", "can't", "could've", "couldn't", "we've", "where's", "who've")}}


def process_punctuation(text: str) -> str:
    """Punctuation next to a space (or anywhere, if a digit-comma-digit occurs) is removed, elsewhere it becomes a
    space; periods not followed by a digit are removed."""
    out = text
    remove_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        if remove_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def process_digits_and_articles(text: str, contractions: Mapping[str, str] = CONTRACTIONS) -> str:
    """Lower case; number words become digits; articles are dropped; contractions get their apostrophes."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(contractions.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str, contractions: Mapping[str, str] = CONTRACTIONS) -> str:
    """A model's answer as the VQA evaluation compares it."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digits_and_articles(process_punctuation(text), contractions)


def normalize_textvqa(text: str) -> str:
    """TextVQA's (EvalAI's) answer processor, applied to the prediction and every human answer alike."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return normalize_answer(text)


def leave_one_out_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """``min(#matches among the other answers / 3, 1)``, averaged over leaving out each of the answers."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one reference answer")
    total = 0.0
    for left_out in range(len(answers)):
        matches = sum(1 for i, answer in enumerate(answers) if i != left_out and answer == prediction)
        total += min(1.0, matches / 3)
    return total / len(answers)


def vqa_accuracy(prediction: str, answers: Sequence[str], *,
                 process_answer: Callable[[str], str] = process_punctuation,
                 contractions: Mapping[str, str] = CONTRACTIONS) -> float:
    """VQAv2 by default (human answers get the punctuation rule only, as the answers are stored normalised);
    ``process_answer=str`` and ``contractions=CONTRACTIONS_VIZWIZ`` for VizWiz."""
    return leave_one_out_accuracy(normalize_answer(prediction, contractions), [process_answer(a) for a in answers])


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    return leave_one_out_accuracy(normalize_textvqa(prediction), [normalize_textvqa(a) for a in answers])


def gqa_prediction(text: str) -> str:
    """GQA's evaluation compares the prediction with punctuation removed and lower-cased to the gold answer."""
    return text.translate(str.maketrans("", "", string.punctuation)).lower()


# -- binary answers -------------------------------------------------------------------------------------------------
def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Probability that a positive scores above a negative (ties count half); None without both classes."""
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum, i = 0.0, 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        average_rank = (i + j) / 2 + 1
        rank_sum += average_rank * sum(1 for k in order[i:j + 1] if labels[k])
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def average_precision(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the precision-recall steps: the sum over score thresholds of (recall gained) × precision."""
    positives = sum(1 for label in labels if label)
    if positives == 0:
        return None
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    total, true_pos, seen, previous_recall, i = 0.0, 0, 0, 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        true_pos += sum(1 for k in order[i:j + 1] if labels[k])
        seen += j - i + 1
        recall = true_pos / positives
        total += (recall - previous_recall) * (true_pos / seen)
        previous_recall, i = recall, j + 1
    return total


def binary_metrics(labels: Sequence[bool], predicted: Sequence[bool],
                   scores: Sequence[float] | None = None) -> dict[str, float | None]:
    """Accuracy, precision, recall, F1 and the share of positive answers (POPE's yes-ratio); ROC AUC and average
    precision of ``scores`` (the positive answer's probability) when given."""
    if not labels or len(labels) != len(predicted):
        raise ValueError("binary_metrics needs as many predictions as labels, at least one")
    tp = sum(1 for y, p in zip(labels, predicted, strict=True) if y and p)
    fp = sum(1 for y, p in zip(labels, predicted, strict=True) if not y and p)
    fn = sum(1 for y, p in zip(labels, predicted, strict=True) if y and not p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    metrics: dict[str, float | None] = {
        "accuracy": sum(1 for y, p in zip(labels, predicted, strict=True) if y == p) / len(labels),
        "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(1 for p in predicted if p) / len(predicted),
    }
    if scores is not None:
        metrics["auroc"] = roc_auc(labels, scores)
        metrics["ap"] = average_precision(labels, scores)
    return metrics


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def grouped_accuracy(records: Sequence[Mapping[str, Any]], key: str, correct: Callable[[Any], float]) -> dict:
    """Mean of ``correct(record)`` per value of ``record[key]`` (groups in sorted order)."""
    groups: dict[str, list[float]] = {}
    for record in records:
        groups.setdefault(str(record[key]), []).append(correct(record))
    return {name: mean(values) for name, values in sorted(groups.items())}


# -- boxes ----------------------------------------------------------------------------------------------------------
def parse_box(text: str) -> list[float] | None:
    """``[x1, y1, x2, y2]`` with every coordinate in [0, 1], x1 < x2 and y1 < y2, read as a Python literal (the
    original harness's rule), or None."""
    try:
        box = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(box, list) or len(box) != 4:
        return None
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c <= 1 for c in box):
        return None
    if not (box[0] < box[2] and box[1] < box[3]):
        return None
    return [float(c) for c in box]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


__all__ = ["ARTICLES", "CONTRACTIONS", "CONTRACTIONS_VIZWIZ", "NUMBER_WORDS", "PUNCTUATION", "argmax",
           "average_precision", "binary_metrics", "box_iou", "gqa_prediction", "grouped_accuracy",
           "leave_one_out_accuracy", "mean", "normalize_answer", "normalize_textvqa", "parse_box",
           "process_digits_and_articles", "process_punctuation", "roc_auc", "textvqa_accuracy", "vqa_accuracy"]
