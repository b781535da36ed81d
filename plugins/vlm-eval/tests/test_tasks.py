"""Every benchmark on its tiny official-format fixture: the prompts the original harness sends, the metric on known
answers, and errors that name the file, the entry and the field."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
from prism_plugin_vlm_eval import prompts
from prism_plugin_vlm_eval.spec import SPECS
from vlm_eval_fixtures import ORACLE, WRITERS
from vlm_eval_oracle import OracleVLM

import prism_core
from prism_core.data import DataError
from prism_core.testing.conformance import EvalTaskConformance

KINDS = [spec.kind for spec in SPECS]
SIZES = {"pope": 6}


def evaluate(kind, root, pairs, tmp_path=None, **options):
    vlm = OracleVLM(pairs)
    report = prism_core.evaluate(vlm, [kind], root=root, batch_size=3, progress=False,
                                 out_dir=tmp_path, **options)
    return report["tasks"][kind], vlm


@pytest.mark.parametrize("kind", KINDS)
def test_the_right_answers_score_full_marks(kind, data_root, tmp_path):
    summary, vlm = evaluate(kind, data_root, ORACLE[kind], tmp_path)
    assert summary["num_examples"] == SIZES.get(kind, 4)
    assert summary["metrics"][summary["headline"]] == pytest.approx(1.0)
    assert max(len(call["texts"]) for call in vlm.calls) == 3  # batched: batch_size rows per model call
    records = [json.loads(line) for line in (tmp_path / f"predictions-{kind}.jsonl").read_text().splitlines()]
    assert len(records) == summary["num_examples"] and len({r["id"] for r in records}) == len(records)
    assert json.loads((tmp_path / "results.json").read_text())["tasks"][kind] == summary


def test_prompts_are_the_original_harness_messages_in_the_models_prompt_format(data_root):
    _, vlm = evaluate("vqa-v2", data_root, ORACLE["vqa-v2"])
    assert vlm.calls[0]["texts"][0] == ("In: What colour is the cat?\nAnswer the question using a single word or "
                                        "phrase.\nOut:")
    assert vlm.calls[0]["kwargs"] == {"do_sample": False, "max_new_tokens": 128}
    _, vlm = evaluate("vizwiz", data_root, ORACLE["vizwiz"])
    unanswerable = "respond with 'Unanswerable'.\nAnswer the question using a single word or phrase."
    assert unanswerable in vlm.calls[0]["texts"][0]
    _, vlm = evaluate("vsr", data_root, ORACLE["vsr"])
    assert vlm.calls[0]["texts"][0] == ('In: Based on the image, is this statement "True" or "False"? The dog is left '
                                        'of the cat.\nRespond with "True" or "False" directly.\nOut:')
    assert vlm.calls[0]["candidates"] == ["True", "False"]
    _, vlm = evaluate("tally-qa", data_root, ORACLE["tally-qa"])
    assert vlm.calls[0]["candidates"] == [chr(ord("A") + i) for i in range(16)]
    assert "\nA. 0\nB. 1\n" in vlm.calls[0]["texts"][0] and "\nP. 15\nAnswer with the option's letter" in \
        vlm.calls[0]["texts"][0]
    _, vlm = evaluate("refcoco", data_root, ORACLE["refcoco"])
    assert vlm.calls[0]["texts"][0] == ('In: Please provide the bounding box coordinate of the region this sentence '
                                        'describes: "man on the left"\nOut:')
    _, vlm = evaluate("pope", data_root, ORACLE["pope"])
    assert vlm.calls[0]["candidates"] == ["Yes", "No"]
    assert prompts.multiple_choice("Q?", ["x", "y"]) == "\nQ?\nA. x\nB. y\nAnswer with the option's letter from " \
                                                       "the given choices directly."


def test_text_vqa_asks_with_and_without_the_ocr_tokens(data_root):
    summary, vlm = evaluate("text-vqa", data_root, ORACLE["text-vqa"])
    with_ocr, without = vlm.calls[0]["texts"][0], vlm.calls[1]["texts"][0]
    assert "\nReference OCR token: nike, x\nAnswer the question" in with_ocr
    assert without == "In: what is the brand?\nAnswer the question using a single word or phrase.\nOut:"
    assert summary["metrics"] == {"accuracy": 1.0, "accuracy_pure": 1.0}


def test_vqa_accuracy_on_partly_right_answers(data_root):
    # q1 right; q2 "two" is "2", which 4 of the 10 humans gave: full marks; q3 wrong; q4 "a stick." is "stick",
    # given by one human: min(1/3, 1) for the 9 subsets that hold it, 0 for the one that does not.
    summary, _ = evaluate("vqa-v2", data_root, [("cat", "Black"), ("dogs", "two"), ("raining", "no"),
                                                ("holding", "a stick.")])
    assert summary["metrics"]["accuracy"] == pytest.approx((1 + 1 + 0 + 0.3) / 4)
    assert summary["metrics"]["by_answer_type"] == pytest.approx({"number": 1.0, "other": 0.65, "yes/no": 0.0})


def test_vizwiz_scores_unanswerable_answers(data_root):
    summary, _ = evaluate("vizwiz", data_root, [("", "Unanswerable.")])
    metrics = summary["metrics"]
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert (metrics["answerable_accuracy"], metrics["unanswerable_accuracy"]) == (0.0, 1.0)
    assert metrics["unanswerable_f1"] == pytest.approx(2 / 3)  # all four called unanswerable, two are
    assert metrics["unanswerable_ap"] == pytest.approx(0.5)


def test_gqa_strips_punctuation_and_case_and_splits_open_and_binary(data_root):
    summary, vlm = evaluate("gqa", data_root, [("tree", "Car."), ("sky", "no"), ("table", "cup"), ("people", "No!")])
    assert sum(len(c["texts"]) for c in vlm.calls) == 4  # the unbalanced question is not asked
    metrics = summary["metrics"]
    assert metrics["accuracy"] == 0.75 and metrics["open"] == 1.0 and metrics["binary"] == 0.5
    assert metrics["by_semantic"] == {"attr": 0.0, "obj": 1.0, "rel": 1.0}


def test_pope_reports_each_split_and_the_average(data_root):
    # Always "yes": per split one right (the yes question), precision 1/2, recall 1, F1 2/3, yes-ratio 1.
    summary, _ = evaluate("pope", data_root, [("", "Yes")])
    metrics = summary["metrics"]
    assert set(metrics["by_split"]) == {"adversarial", "popular", "random"}
    assert metrics["accuracy"] == 0.5 and metrics["yes_ratio"] == 1.0
    assert metrics["f1"] == pytest.approx(2 / 3) and metrics["precision"] == 0.5 and metrics["recall"] == 1.0
    assert metrics["auroc"] == 0.5  # every answer equally sure


def test_multiple_choice_and_box_tasks_on_wrong_answers(data_root):
    summary, _ = evaluate("tally-qa", data_root, [("", "A")])  # always "0": right for the cats only
    assert summary["metrics"] == {"accuracy": 0.25, "by_split": {"complex": 0.0, "simple": 0.5}}
    summary, _ = evaluate("ai2d", data_root, [("", "B")])  # right for "eats the grass" (diagram 1, a test id)
    assert summary["metrics"] == {"accuracy": 0.25, "by_split": {"test": 0.5, "val": 0.0}}
    # IoU of [0.1, 0.2, 0.4, 0.6] with [0.1, 0.2, 0.5, 0.6] is 0.75; with the dog's box 0; text is no box.
    summary, _ = evaluate("refcoco", data_root, [("man on the left", "[0.1, 0.2, 0.4, 0.6]"), ("guy", "a man"),
                                                 ("dog", "[0.1, 0.2, 0.4, 0.6]")])
    assert summary["metrics"] == {"accuracy": 0.25, "invalid": 0.25}
    summary, _ = evaluate("ocid-ref", data_root, [("bowl", "[0.1, 0.1, 0.25, 0.3]"), ("", "nothing")])
    # IoU 0.75 for the bowl (minimum clutter), nothing else parses.
    assert summary["metrics"]["accuracy"] == 0.25
    assert summary["metrics"]["by_clutter"] == {"maximum": 0.0, "medium": 0.0, "minimum": 1.0}


def test_limit_picks_the_same_subset_every_time(data_root):
    first, _ = evaluate("pope", data_root, ORACLE["pope"], limit=4)
    again, _ = evaluate("pope", data_root, ORACLE["pope"], limit=4)
    assert first["num_examples"] == 4 and first == {**again, "seconds": first["seconds"],
                                                    "examples_per_s": first["examples_per_s"]}


# -- errors name the file, the entry and the field ----------------------------------------------------------------
def _copy(data_root, tmp_path):
    return shutil.copytree(data_root, tmp_path / "data")


MISSING = {"vqa-v2": "vqa-v2/v2_mscoco_val2014_annotations.json", "gqa": "gqa/testdev_balanced_questions.json",
           "vizwiz": "vizwiz/val.json", "text-vqa": "text-vqa/textvqa_val_v051_ocr.jsonl",
           "pope": "pope/coco_pope_popular.json", "vsr": "vsr/test.jsonl", "tally-qa": "tally-qa/test.json",
           "ai2d": "ai2d/ai2d_test_ids.csv", "refcoco": "refcoco/refs(unc).p", "refcoco+": "refcoco+/instances.json",
           "refcocog": "refcocog/refs(umd).p", "ocid-ref": "ocid-ref/val_expressions.json"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_annotation_file_is_named_with_how_to_get_it(kind, data_root, tmp_path):
    root = _copy(data_root, tmp_path)
    (root / MISSING[kind]).unlink()
    with pytest.raises(DataError, match=rf"{MISSING[kind].replace('+', '[+]').replace('(', '[(]').replace(')', '[)]')}"
                                        rf": not found; `prism data prepare {kind.replace('+', '[+]')} --root DATA`"):
        evaluate(kind, root, ORACLE[kind])


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_lines(path, index, edit):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows[index])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _edit_refs(path, edit):
    refs = pickle.loads(path.read_bytes())
    edit(refs)
    path.write_bytes(pickle.dumps(refs, protocol=2))


BAD_ENTRIES = [
    ("vqa-v2", lambda r: _edit_json(r / "vqa-v2/v2_mscoco_val2014_annotations.json",
                                    lambda d: d["annotations"][2].pop("answers")),
     r"v2_mscoco_val2014_annotations\.json#2: missing field 'answers'"),
    ("vqa-v2", lambda r: _edit_json(r / "vqa-v2/v2_mscoco_val2014_annotations.json",
                                    lambda d: d["annotations"][1].update(question_id=5)),
     r"annotations\.json#1: question_id 5 has no question in .*questions\.json"),
    ("gqa", lambda r: _edit_json(r / "gqa/testdev_balanced_questions.json",
                                 lambda d: d["201"]["types"].pop("semantic")),
     r"testdev_balanced_questions\.json#201\.types: missing field 'semantic'"),
    ("vizwiz", lambda r: _edit_json(r / "vizwiz/val.json", lambda d: d[3].update(answerable="yes")),
     r"val\.json#3: field 'answerable' must be an integer, got str 'yes'"),
    ("text-vqa", lambda r: _edit_lines(r / "text-vqa/textvqa_val_v051_ocr.jsonl", 2,
                                       lambda e: e.update(image="tv0003.jpg")),
     r"textvqa_val_v051_ocr\.jsonl line 3: image 'tv0003\.jpg' is not entry 2's image 'tv0002'"),
    ("pope", lambda r: _edit_lines(r / "pope/coco_pope_random.json", 1, lambda e: e.update(label="maybe")),
     r"coco_pope_random\.json#1: field 'label' must be 'yes' or 'no', got 'maybe'"),
    ("pope", lambda r: (r / "pope/coco_pope_random.json").write_text('{"question_id": 1,\n'),
     r"coco_pope_random\.json line 1: malformed JSON"),
    ("vsr", lambda r: _edit_lines(r / "vsr/test.jsonl", 0, lambda e: e.pop("caption")),
     r"test\.jsonl#0: missing field 'caption'"),
    ("tally-qa", lambda r: _edit_json(r / "tally-qa/test.json", lambda d: d[1].update(answer=40)),
     r"test\.json#1: field 'answer' must be a count from 0 to 15, got 40"),
    ("ai2d", lambda r: _edit_json(r / "ai2d/questions/2.png.json",
                                  lambda d: d["questions"]["Which needs sunlight?"].update(correctAnswer=7)),
     r"2\.png\.json#Which needs sunlight\?: 'correctAnswer' 7 is not one of its 4 options"),
    ("refcoco", lambda r: _edit_refs(r / "refcoco/refs(unc).p", lambda refs: refs[1].update(ann_id=99)),
     r"refs\(unc\)\.p#1: ann_id 99 is not an annotation of .*instances\.json"),
    ("refcoco", lambda r: _edit_json(r / "refcoco/instances.json",
                                     lambda d: d["annotations"][0].update(bbox=[150, 20, 80, 40])),
     r"instances\.json#annotations\[0\]: box \[150, 20, 230, 60\] does not fit its 200x100 image"),
    ("ocid-ref", lambda r: _edit_json(r / "ocid-ref/val_expressions.json", lambda d: d["2"].update(take_id=33)),
     r"val_expressions\.json#2: 'take_id' must be in \[0, 20\], got 33"),
    ("vqa-v2", lambda r: (r / "coco/val2014/COCO_val2014_000000000002.jpg").unlink(),
     r"vqa-v2: 2 of 4 images are missing, e\.g\. .*COCO_val2014_000000000002\.jpg \(.*annotations\.json#1\)"),
]


@pytest.mark.parametrize(("kind", "damage", "message"), BAD_ENTRIES, ids=[f"{k}-{i}" for i, (k, _, _) in
                                                                          enumerate(BAD_ENTRIES)])
def test_a_bad_entry_is_named_by_file_entry_and_field(kind, damage, message, data_root, tmp_path):
    root = _copy(data_root, tmp_path)
    damage(root)
    with pytest.raises(DataError, match=message):
        evaluate(kind, root, ORACLE[kind])


def test_a_pickle_that_builds_objects_is_refused_unrun(data_root, tmp_path):
    root = _copy(data_root, tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    (root / "refcoco/refs(unc).p").write_bytes(pickle.dumps([Payload()]))
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: not a pickle of plain data \(refused to build "
                                        r"builtins\.print"):
        evaluate("refcoco", root, ORACLE["refcoco"])


def test_no_data_root_says_how_to_give_one():
    with pytest.raises(DataError, match=r"pope: no data root .* pass --root DATA"):
        prism_core.evaluate(OracleVLM([]), ["pope"], progress=False)


# -- the role's contract, per kind ----------------------------------------------------------------------------------
def _conformance(spec_class):
    @pytest.fixture
    def task(self, data_root):
        return self.spec.build(root=str(data_root))

    name = "Test" + "".join(part.capitalize() for part in spec_class.kind.replace("+", "-plus").split("-"))
    return type(f"{name}Conformance", (EvalTaskConformance,), {"spec": spec_class(), "task": task})


for _spec_class in SPECS:
    _test = _conformance(_spec_class)
    globals()[_test.__name__] = _test


def test_writers_cover_every_kind():
    assert set(WRITERS) == set(KINDS) == set(ORACLE)
