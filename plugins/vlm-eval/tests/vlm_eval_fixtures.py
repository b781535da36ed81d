"""Tiny copies of every benchmark in its official format (a few images, annotations and answers), laid out under a
data root as ``prism data prepare`` lays the real ones out, and the right answer to each question (``ORACLE``)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from PIL import Image

#: For each task: (a text the prompt contains, the right answer): generated text, or the candidate to favour.
ORACLE: dict[str, list[tuple[str, str]]] = {
    "vqa-v2": [("colour is the cat", "black"), ("How many dogs", "3"), ("raining", "yes"), ("man holding", "umbrella")],
    "gqa": [("left of the tree", "car"), ("Is the sky blue", "yes"), ("What is on the table", "cup"),
            ("Are there people", "no")],
    "vizwiz": [("What is this", "soup"), ("colour is this shirt", "blue"), ("What does this say", "unanswerable"),
               ("Is this expired", "unanswerable")],
    "text-vqa": [("brand", "nike"), ("the number", "42"), ("the sign say", "stop"), ("the time", "10:30")],
    "pope": [("a dog", "Yes"), ("a cat", "No"), ("a car", "Yes"), ("a bird", "No"), ("a person", "Yes"),
             ("a horse", "No")],
    "vsr": [("left of the cat", "True"), ("on the table", "False"), ("under the bed", "True"),
            ("behind the car", "False")],
    "tally-qa": [("many dogs", "C"), ("many cats", "A"), ("many cars", "F"), ("many people", "L")],
    "ai2d": [("eats the grass", "B"), ("top predator", "D"), ("stage comes first", "A"), ("needs sunlight", "C")],
    "refcoco": [("man on the left", "[0.1, 0.2, 0.5, 0.6]"), ("guy in red", "[0.1, 0.2, 0.5, 0.6]"),
                ("dog right", "[0.5, 0.25, 0.75, 0.75]"), ("brown dog", "[0.5, 0.25, 0.75, 0.75]")],
    "ocid-ref": [("red bowl", "[0.1, 0.1, 0.3, 0.3]"), ("green apple", "[0.5, 0.5, 0.7, 0.8]"),
                 ("blue box", "[0.2, 0.6, 0.4, 0.9]"), ("yellow banana", "[0.6, 0.1, 0.9, 0.4]")],
}
ORACLE["refcoco+"] = ORACLE["refcocog"] = ORACLE["refcoco"]


def image(path: Path, size: tuple[int, int] = (32, 24), colour: tuple[int, int, int] = (90, 120, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_lines(path: Path, rows: list[object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def vqa_v2(root: Path) -> None:
    questions = ["What colour is the cat?", "How many dogs are there?", "Is it raining?", "What is the man holding?"]
    answers = [["black"] * 10, ["2"] * 4 + ["3"] * 6, ["yes"] * 10, ["umbrella"] * 9 + ["stick"]]
    types = [("what color is the", "other"), ("how many", "number"), ("is it", "yes/no"), ("what is the", "other")]
    write_json(root / "vqa-v2/v2_OpenEnded_mscoco_val2014_questions.json", {
        "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
        "questions": [{"question_id": 100 + i, "image_id": 1 + i % 2, "question": q} for i, q in enumerate(questions)]})
    write_json(root / "vqa-v2/v2_mscoco_val2014_annotations.json", {"annotations": [
        {"question_id": 100 + i, "image_id": 1 + i % 2, "question_type": t, "answer_type": a,
         "multiple_choice_answer": ans[-1], "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": j + 1}
                                                         for j, x in enumerate(ans)]}
        for i, (ans, (t, a)) in enumerate(zip(answers, types, strict=True))]})
    for image_id in (1, 2):
        image(root / f"coco/val2014/COCO_val2014_{image_id:012d}.jpg")


def gqa(root: Path) -> None:
    rows = [("What is left of the tree?", "car", "query", "rel", True),
            ("Is the sky blue?", "yes", "verify", "attr", True),
            ("What is on the table?", "cup", "query", "rel", True),
            ("Are there people?", "no", "verify", "obj", True),
            ("Unbalanced question?", "no", "verify", "obj", False)]
    write_json(root / "gqa/testdev_balanced_questions.json", {
        f"20{i}": {"imageId": f"n{i % 2}", "question": q, "answer": a, "fullAnswer": a, "isBalanced": balanced,
                   "types": {"structural": s, "semantic": sem, "detailed": "x"}, "groups": {"global": None}}
        for i, (q, a, s, sem, balanced) in enumerate(rows)})
    for i in (0, 1):
        image(root / f"gqa/images/n{i}.jpg")


def vizwiz(root: Path) -> None:
    rows = [("What is this?", ["soup"] * 8 + ["can"] * 2, 1), ("What colour is this shirt?", ["blue"] * 10, 1),
            ("What does this say?", ["unanswerable"] * 9 + ["hello"], 0),
            ("Is this expired?", ["unanswerable"] * 10, 0)]
    entries = []
    for i, (q, answers, answerable) in enumerate(rows):
        name = f"VizWiz_val_{i:08d}.jpg"
        image(root / "vizwiz/val" / name)
        entries.append({"image": name, "question": q, "answer_type": "other", "answerable": answerable,
                        "answers": [{"answer": a, "answer_confidence": "yes"} for a in answers]})
    write_json(root / "vizwiz/val.json", entries)


def text_vqa(root: Path) -> None:
    rows = [("what is the brand?", "nike"), ("what is the number?", "42"), ("what does the sign say?", "stop"),
            ("what is the time?", "10:30")]
    data, ocr = [], []
    for i, (q, a) in enumerate(rows):
        image_id = f"tv{i:04d}"
        image(root / f"text-vqa/train_images/{image_id}.jpg")
        data.append({"question_id": 34602 + i, "question": q, "image_id": image_id, "answers": [a] * 10})
        ocr.append({"question_id": i, "image": f"{image_id}.jpg", "text": f"{q}\nReference OCR token: {a}, x"})
    write_json(root / "text-vqa/TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})
    write_lines(root / "text-vqa/textvqa_val_v051_ocr.jsonl", ocr)


def pope(root: Path) -> None:
    objects = {"adversarial": [("dog", "yes"), ("cat", "no")], "popular": [("car", "yes"), ("bird", "no")],
               "random": [("person", "yes"), ("horse", "no")]}
    for split, rows in objects.items():
        write_lines(root / f"pope/coco_pope_{split}.json", [
            {"question_id": i + 1, "image": "COCO_val2014_000000000001.jpg",
             "text": f"Is there a {thing} in the image?", "label": label} for i, (thing, label) in enumerate(rows)])
    image(root / "coco/val2014/COCO_val2014_000000000001.jpg")


def vsr(root: Path) -> None:
    rows = [("The dog is left of the cat.", 1, "left of"), ("The cup is on the table.", 0, "on"),
            ("The shoe is under the bed.", 1, "under"), ("The bike is behind the car.", 0, "behind")]
    for i in range(2):
        image(root / f"vsr/images/00000{i}.jpg")
    write_lines(root / "vsr/test.jsonl", [{"image": f"00000{i % 2}.jpg", "caption": c, "label": label, "relation": r,
                                           "subj": "x", "obj": "y"} for i, (c, label, r) in enumerate(rows)])


def tally_qa(root: Path) -> None:
    rows = [("How many dogs are there?", 2, True), ("How many cats are there?", 0, True),
            ("How many cars are parked on the left?", 5, False), ("How many people wear hats?", 11, False)]
    write_json(root / "tally-qa/test.json", [
        {"image": f"VG_100K/{i}.jpg", "question": q, "answer": a, "issimple": simple, "question_id": 900 + i,
         "image_id": i, "data_source": "imported_genome"} for i, (q, a, simple) in enumerate(rows)])
    for i in range(len(rows)):
        image(root / f"vg/VG_100K/{i}.jpg")


def ai2d(root: Path) -> None:
    diagrams = {
        1: [("Which animal eats the grass?", ["lion", "deer", "hawk", "snake"], 1),
            ("Which is the top predator?", ["deer", "grass", "mouse", "hawk"], 3)],
        2: [("Which stage comes first?", ["egg", "larva", "pupa", "adult"], 0),
            ("Which needs sunlight?", ["fox", "rabbit", "plant", "owl"], 2)],
    }
    for number, questions in diagrams.items():
        image(root / f"ai2d/images/{number}.png")
        write_json(root / f"ai2d/questions/{number}.png.json", {"imageName": f"{number}.png", "questions": {
            q: {"abcLabel": False, "answerTexts": choices, "correctAnswer": answer, "questionId": f"{number}.png-{i}"}
            for i, (q, choices, answer) in enumerate(questions)}})
    (root / "ai2d/ai2d_test_ids.csv").write_text("1\n")


def refer(root: Path) -> None:
    """RefCOCO, RefCOCO+ and RefCOCOg: the same two references (two sentences each) in each layout."""
    instances = {"images": [{"id": 7, "width": 200, "height": 100, "file_name": "COCO_train2014_000000000007.jpg"}],
                 "annotations": [{"id": 70, "image_id": 7, "bbox": [20, 20, 80, 40], "category_id": 1},
                                 {"id": 71, "image_id": 7, "bbox": [100, 25, 50, 50], "category_id": 18}]}
    refs = [{"ref_id": 1, "ann_id": 70, "image_id": 7, "split": "val", "category_id": 1, "sent_ids": [10, 11],
             "sentences": [{"sent_id": 10, "sent": "man on the left", "raw": "Man on the left", "tokens": []},
                           {"sent_id": 11, "sent": "guy in red", "raw": "guy in red", "tokens": []}]},
            {"ref_id": 2, "ann_id": 71, "image_id": 7, "split": "val", "category_id": 18, "sent_ids": [12, 13],
             "sentences": [{"sent_id": 12, "sent": "dog right", "raw": "dog right", "tokens": []},
                           {"sent_id": 13, "sent": "brown dog", "raw": "brown dog", "tokens": []}]},
            {"ref_id": 3, "ann_id": 71, "image_id": 7, "split": "train", "category_id": 18, "sent_ids": [14],
             "sentences": [{"sent_id": 14, "sent": "a training sentence", "raw": "", "tokens": []}]}]
    for name, refs_file in (("refcoco", "refs(unc).p"), ("refcoco+", "refs(unc).p"), ("refcocog", "refs(umd).p")):
        write_json(root / name / "instances.json", instances)
        (root / name / refs_file).write_bytes(pickle.dumps(refs, protocol=2))
    image(root / "coco/train2014/COCO_train2014_000000000007.jpg", size=(200, 100))


def ocid_ref(root: Path) -> None:
    rows = [("the red bowl", [64, 48, 192, 144], 3), ("the green apple", [320, 240, 448, 384], 12),
            ("the blue box", [128, 288, 256, 432], 18), ("the yellow banana", [384, 48, 576, 192], 20)]
    entries = {}
    for i, (sentence, box, take) in enumerate(rows):
        scene = f"ARID20/table/top/seq{i:02d}/rgb/result_2018-08-21-14-53-33.png"
        image(root / "ocid-ref/OCID-dataset" / scene, size=(64, 48))
        entries[str(i)] = {"scene_path": scene, "sentence": sentence, "bbox": json.dumps(box), "take_id": take,
                           "sub_dataset": "ARID20", "class": "x"}
    write_json(root / "ocid-ref/val_expressions.json", entries)


WRITERS = {"vqa-v2": vqa_v2, "gqa": gqa, "vizwiz": vizwiz, "text-vqa": text_vqa, "pope": pope, "vsr": vsr,
           "tally-qa": tally_qa, "ai2d": ai2d, "refcoco": refer, "refcoco+": refer, "refcocog": refer,
           "ocid-ref": ocid_ref}


def write_all(root: Path) -> Path:
    for writer in dict.fromkeys(WRITERS.values()):
        writer(root)
    return root
