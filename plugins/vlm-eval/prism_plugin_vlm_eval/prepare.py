"""``prism data prepare KIND --root DATA``: download and extract a benchmark where its task kind reads it.

The downloads are the original harness's sources (TRI-ML/vlm-evaluation's registry), fetched, resumed, verified and
extracted by the LLaVA data plugin's ``Preparer`` (HTTP ``Range`` resumption, SHA-256 checks against ``--checksums``
or a mirror's ``SHA256SUMS``, zips extracted aside then moved into place, ``--mirror`` for air-gapped copies). No
checksum is pinned here: the sources publish none, so each download's SHA-256 is printed for you to record.

COCO and Visual Genome images are shared: ``DATA/coco/val2014`` (VQAv2, POPE), ``DATA/coco/train2014`` (RefCOCO*),
``DATA/vg`` (TallyQA); each is downloaded once. After a benchmark is prepared, every file its task reads is checked
to be there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prism_plugin_llava_data.prepare import PrepareError, Preparer, RemoteFile, parse_checksums

from prism_plugin_vlm_eval.spec import SPECS

MIRROR_ENV = "PRISM_DATA_MIRROR"
COCO = "http://images.cocodataset.org/zips"
VG = "https://cs.stanford.edu/people/rak248"
POPE = "https://raw.githubusercontent.com/AoiDragon/POPE/e3e39262c85a6a83f26cf5094022a782cb0df58d/output/coco"
REFER = "https://bvisionweb1.cs.unc.edu/licheng/referit/data"
TEXTVQA_OCR = ("https://gist.githubusercontent.com/siddk/74a709cb5e292099bae3cbcec1d0ce8a/raw/"
               "74e367e79a23b1043eb469b36168945fbac01601/textvqa_val_v051_ocr.jsonl")


def _file(key: str, dest: str, url: str | None = None, **kw: object) -> RemoteFile:
    # Keys live under vlm-eval/ so a data root shared with the LLaVA data never mixes their download markers.
    return RemoteFile(f"vlm-eval/{key}", dest, url=url, **kw)  # type: ignore[arg-type]


COCO_VAL2014 = _file("coco/val2014.zip", "coco", f"{COCO}/val2014.zip", extract=True)
COCO_TRAIN2014 = _file("coco/train2014.zip", "coco", f"{COCO}/train2014.zip", extract=True)
VG_IMAGES = [_file("vg/images.zip", "vg", f"{VG}/VG_100K_2/images.zip", extract=True),
             _file("vg/images2.zip", "vg", f"{VG}/VG_100K_2/images2.zip", extract=True)]

#: What each benchmark downloads; a zip's top-level entries go into its destination folder.
FILES: dict[str, list[RemoteFile]] = {
    "vqa-v2": [
        _file("vqa-v2/v2_Questions_Val_mscoco.zip", "vqa-v2",
              "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_Questions_Val_mscoco.zip", extract=True),
        _file("vqa-v2/v2_Annotations_Val_mscoco.zip", "vqa-v2",
              "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_Annotations_Val_mscoco.zip", extract=True),
        COCO_VAL2014,
    ],
    "gqa": [
        _file("gqa/questions1.2.zip", "gqa", "https://downloads.cs.stanford.edu/nlp/data/gqa/questions1.2.zip",
              extract=True),
        _file("gqa/images.zip", "gqa", "https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip", extract=True),
    ],
    "vizwiz": [
        _file("vizwiz/Annotations.zip", "vizwiz", "https://vizwiz.cs.colorado.edu/VizWiz_final/vqa_data/Annotations.zip",
              extract=True),
        _file("vizwiz/val.zip", "vizwiz", "https://vizwiz.cs.colorado.edu/VizWiz_final/images/val.zip", extract=True),
    ],
    "text-vqa": [
        _file("text-vqa/TextVQA_0.5.1_val.json", "text-vqa/TextVQA_0.5.1_val.json",
              "https://dl.fbaipublicfiles.com/textvqa/data/TextVQA_0.5.1_val.json"),
        _file("text-vqa/textvqa_val_v051_ocr.jsonl", "text-vqa/textvqa_val_v051_ocr.jsonl", TEXTVQA_OCR),
        _file("text-vqa/train_val_images.zip", "text-vqa",
              "https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip", extract=True),
    ],
    "pope": [*(_file(f"pope/coco_pope_{split}.json", f"pope/coco_pope_{split}.json", f"{POPE}/coco_pope_{split}.json")
               for split in ("adversarial", "popular", "random")), COCO_VAL2014],
    "vsr": [
        RemoteFile("vlm-eval/vsr/test.jsonl", "vsr/test.jsonl", hub=("cambridgeltl/vsr_zeroshot", "test.jsonl")),
        _file("vsr/vsr_images.zip", "vsr", "https://www.dropbox.com/s/0s3bj25s62crjh2/vsr_images.zip?dl=1",
              extract=True),
    ],
    "tally-qa": [_file("tally-qa/tallyqa.zip", "tally-qa",
                       "https://github.com/manoja328/tallyqa/blob/master/tallyqa.zip?raw=true", extract=True),
                 *VG_IMAGES],
    "ai2d": [
        _file("ai2d/ai2d-all.zip", "", "http://ai2-website.s3.amazonaws.com/data/ai2d-all.zip", extract=True),
        _file("ai2d/ai2d_test_ids.csv", "ai2d/ai2d_test_ids.csv",
              "https://s3-us-east-2.amazonaws.com/prior-datasets/ai2d_test_ids.csv"),
    ],
    **{name: [_file(f"refer/{name}.zip", "", f"{REFER}/{name}.zip", extract=True), COCO_TRAIN2014]
       for name in ("refcoco", "refcoco+", "refcocog")},
    "ocid-ref": [_file("ocid-ref/val_expressions.json", "ocid-ref/val_expressions.json",
                       "https://drive.google.com/uc?export=download&id=19dD65ABxWiOLrpNea7mUW1RjJDBLo3Yp")],
}

#: Parts with no stable download link: where to put them by hand.
MANUAL: dict[str, list[tuple[str, str]]] = {
    "ocid-ref": [("ocid-ref/OCID-dataset", "OCID's scenes come as a tar.gz behind a link that rotates "
                                           "(https://www.acin.tuwien.ac.at/en/vision-for-robotics/software-tools/"
                                           "object-clutter-indoor-dataset/): extract it so that this folder holds "
                                           "its ARID10, ARID20 and YCB10 folders")],
}

def required_paths(kind: str) -> list[str]:
    """What the kind's task reads with its default fields, relative to the data root."""
    spec = next(s for s in SPECS if s.kind == kind)()
    return [str(Path(spec.folder_name, p)) for p in spec.required()]


def prepare(kind: str, root: str | Path, *, mirror: str | None = None, checksums_file: str | None = None,
            progress: bool = True, log: Callable[[str], None] = print) -> None:
    """Download, verify and extract benchmark ``kind`` under ``root``; re-running resumes or skips what is done."""
    import os

    if kind not in FILES:
        raise PrepareError(f"unknown benchmark {kind!r}; choose from {', '.join(FILES)}")
    root = Path(root).expanduser()
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    checksums = parse_checksums(Path(checksums_file).read_text(), checksums_file) if checksums_file else None
    preparer = Preparer(root, mirror=mirror, checksums=checksums, progress=progress, log=log)
    if mirror and not checksums:
        preparer._load_mirror_checksums()  # the mirror's SHA256SUMS, as the LLaVA data's `prepare` reads it
    log(f"{kind}:")
    for remote in FILES[kind]:
        preparer.install(remote)
    for where, how in MANUAL.get(kind, []):
        if not (root / where).exists():
            raise PrepareError(f"{root / where}: not downloadable automatically. {how}")
    absent = [p for p in required_paths(kind) if not (root / p).exists()]
    if absent:
        raise PrepareError(f"{kind}: after extraction {', '.join(str(root / p) for p in absent)} "
                           f"{'is' if len(absent) == 1 else 'are'} still missing (the archives' layout changed?); "
                           f"set the task's fields to where the files are")
    log(f"{kind}: ready under {root} (evaluate with --task {kind} --root {root})")
