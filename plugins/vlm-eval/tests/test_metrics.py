"""The scorers on hand-computed cases, normalisation edge cases included."""

from __future__ import annotations

import pytest
from prism_plugin_vlm_eval import metrics


@pytest.mark.parametrize(("text", "expected"), [
    ("The cat.", "cat"),                      # article dropped, final period removed, lower case
    ("a dog and an owl", "dog and owl"),
    ("Two", "2"), ("none", "0"), ("ten dogs", "10 dogs"), ("eleven", "eleven"),  # number words up to ten
    ("dont", "don't"), ("couldnt've", "couldn't've"), ("youre", "you're"), ("lets", "lets"),
    ("yes, sir", "yes sir"),                  # punctuation next to a space is removed
    ("hi-fi", "hi fi"),                       # elsewhere it becomes a space
    ("1,000", "1000"),                        # digit,digit: every punctuation mark removed
    ("3.5", "3.5"), ("no.", "no"), ("e.g", "eg"),  # a period is kept only before a digit
    ("  red\nand\tblue  ", "red and blue"),
    ("?!", ""),
])
def test_vqa_answer_normalisation(text, expected):
    assert metrics.normalize_answer(text) == expected


@pytest.mark.parametrize(("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_min_matches_over_three_averaged_over_leaving_each_answer_out(matches, expected):
    # With k of 10 answers equal to the prediction: a subset without one of them has k-1 matches, one without
    # another answer has k; min(matches / 3, 1) averaged over the 10 subsets.
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert metrics.leave_one_out_accuracy("cat", answers) == pytest.approx(expected)


def test_vqa_accuracy_normalises_prediction_and_only_punctuates_the_humans():
    answers = ["2"] * 3 + ["3"] * 7
    assert metrics.vqa_accuracy("Two.", answers) == pytest.approx(0.9)
    assert metrics.vqa_accuracy("the 3", answers) == 1.0
    # Human answers get the punctuation rule only: "T-shirt" becomes "T shirt", still upper case.
    assert metrics.vqa_accuracy("t shirt", ["T-shirt"] * 10) == 0.0
    assert metrics.vqa_accuracy("t shirt", ["t-shirt"] * 10) == 1.0


def test_vizwiz_keeps_its_backticked_contractions():
    assert metrics.normalize_answer("dont know", metrics.CONTRACTIONS_VIZWIZ) == "don`t know"
    assert metrics.normalize_answer("cant", metrics.CONTRACTIONS_VIZWIZ) == "can't"  # one of its apostrophe forms
    assert metrics.vqa_accuracy("dont", ["don't"] * 10, process_answer=str,
                                contractions=metrics.CONTRACTIONS_VIZWIZ) == 0.0


def test_textvqa_processes_both_sides_alike():
    assert metrics.normalize_textvqa("Coca-Cola's, Inc?") == "coca cola 's inc"
    assert metrics.textvqa_accuracy("STOP", ["stop"] * 2 + ["halt"] * 8) == pytest.approx(0.6)


def test_gqa_prediction():
    assert metrics.gqa_prediction("Yes, it is.") == "yes it is"


def test_binary_metrics_by_hand():
    labels = [True, False, True, False, True]
    predicted = [True, True, False, False, True]  # tp 2, fp 1, fn 1, tn 1
    found = metrics.binary_metrics(labels, predicted, [0.9, 0.6, 0.4, 0.1, 0.8])
    assert found["accuracy"] == pytest.approx(3 / 5)
    assert (found["precision"], found["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert found["f1"] == pytest.approx(2 / 3) and found["yes_ratio"] == pytest.approx(3 / 5)
    # Positive-negative pairs ranked right: 0.9 > 0.6, 0.1; 0.8 > 0.6, 0.1; 0.4 > 0.1 only: 5 of 6.
    assert found["auroc"] == pytest.approx(5 / 6)
    # Ranked 0.9 T, 0.8 T, 0.6 F, 0.4 T, 0.1 F: precision at each positive 1, 1, 3/4; AP = (1 + 1 + 3/4) / 3.
    assert found["ap"] == pytest.approx(2.75 / 3)


def test_ranking_metrics_with_ties_and_one_class():
    assert metrics.roc_auc([True, False], [0.5, 0.5]) == 0.5
    # Two tied groups, each half positive: precision 1/2 at recall 1/2, and again at recall 1.
    assert metrics.average_precision([True, False, False, True], [1.0, 1.0, 0.0, 0.0]) == pytest.approx(0.5)
    assert metrics.roc_auc([True, True], [0.1, 0.2]) is None
    assert metrics.average_precision([False], [0.3]) is None
    assert metrics.binary_metrics([False], [False])["f1"] == 0.0


@pytest.mark.parametrize(("text", "box"), [
    ("[0.1, 0.2, 0.5, 0.6]", [0.1, 0.2, 0.5, 0.6]),
    (" [0, 0, 1, 1]\n", [0.0, 0.0, 1.0, 1.0]),
    ("[0.5, 0.2, 0.1, 0.6]", None),           # x1 > x2
    ("[0.1, 0.2, 1.2, 0.6]", None),           # not normalised
    ("[0.1, 0.2, 0.5]", None), ("(0.1, 0.2, 0.5, 0.6)", None), ("The box is [0.1, 0.2, 0.5, 0.6]", None),
    ("['a', 0, 1, 1]", None), ("__import__('os').system('true')", None), ("[" * 500, None),
])
def test_boxes_are_parsed_strictly(text, box):
    assert metrics.parse_box(text) == box


def test_box_iou():
    assert metrics.box_iou([0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]) == pytest.approx(0.0625 / 0.4375)
    assert metrics.box_iou([0, 0, 0.2, 0.2], [0.5, 0.5, 1, 1]) == 0.0
    assert metrics.box_iou([0.1, 0.2, 0.4, 0.6], [0.1, 0.2, 0.5, 0.6]) == pytest.approx(0.75)
