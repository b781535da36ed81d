"""``prism data prepare ID --root DIR``: download, verify, extract and convert the LLaVA data sets.

- Hub-hosted files come through ``huggingface_hub``; others over HTTP, resumed with ``Range`` requests from a
  ``.part`` file, with a progress bar.
- Checksums: a file's known SHA-256 (in ``FILES``) or one listed in a ``SHA256SUMS`` file (``--checksums`` or the
  mirror's) is verified; a mismatch deletes the download and names the file.
- ``--mirror URL`` (or ``$PRISM_DATA_MIRROR``) fetches every file as ``URL/<key>`` over HTTP instead: for
  mirrors, air-gapped caches and tests.
- Zips are extracted to a temporary directory and moved into place, so an interrupted run is simply re-run.
- Post-processing: OCR-VQA GIF/PNG → JPG, LVIS-Instruct-4V and LRV-Instruct conversion and the merged mixture
  files the original configs name (shuffled 3× with seed 7, as the original scripts do).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prism_plugin_llava_data.spec import ALIGN_DIR, INSTRUCT_DIR

MIRROR_ENV = "PRISM_DATA_MIRROR"
CHUNK = 1 << 20


class PrepareError(RuntimeError):
    """A preparation step failed; the message names the file and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    key: str  # stable name: the path under a mirror, and under <root>/.downloads/
    dest: str  # where the file (or, for archives, the extracted content) goes, relative to root
    hub: tuple[str, str] | None = None  # (dataset repo id, filename)
    url: str | None = None
    sha256: str | None = None
    extract: bool = False  # a zip whose top-level entries are moved into `dest`
    manual: str = ""  # where to get it when there is no public direct link


VG = "https://cs.stanford.edu/people/rak248"
LRV_HELP = "LRV-Instruction files are on Google Drive (see FuxiaoLiu/LRV-Instruction); use --mirror or place them"

FILES: dict[str, list[RemoteFile]] = {
    "llava-laion-cc-sbu-558k": [
        RemoteFile("llava-pretrain/blip_laion_cc_sbu_558k.json", f"{ALIGN_DIR}/chat.json",
                   hub=("liuhaotian/LLaVA-Pretrain", "blip_laion_cc_sbu_558k.json")),
        RemoteFile("llava-pretrain/images.zip", ALIGN_DIR, hub=("liuhaotian/LLaVA-Pretrain", "images.zip"),
                   extract=True),
    ],
    "llava-v1.5-instruct": [
        RemoteFile("llava-instruct/llava_v1_5_mix665k.json", f"{INSTRUCT_DIR}/llava_v1_5_mix665k.json",
                   hub=("liuhaotian/LLaVA-Instruct-150K", "llava_v1_5_mix665k.json")),
        RemoteFile("coco/train2017.zip", f"{INSTRUCT_DIR}/coco", url="http://images.cocodataset.org/zips/train2017.zip",
                   extract=True),
        RemoteFile("gqa/images.zip", f"{INSTRUCT_DIR}/gqa",
                   url="https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip", extract=True),
        RemoteFile("ocr_vqa/images.zip", f"{INSTRUCT_DIR}/ocr_vqa", hub=("qnguyen3/ocr_vqa", "images.zip"),
                   extract=True),
        RemoteFile("textvqa/train_val_images.zip", f"{INSTRUCT_DIR}/textvqa",
                   url="https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip", extract=True),
        RemoteFile("vg/images.zip", f"{INSTRUCT_DIR}/vg", url=f"{VG}/VG_100K_2/images.zip", extract=True),
        RemoteFile("vg/images2.zip", f"{INSTRUCT_DIR}/vg", url=f"{VG}/VG_100K_2/images2.zip", extract=True),
    ],
    "lvis-instruct4v": [
        RemoteFile("lvis/lvis_instruct4v_220k.json", f"{INSTRUCT_DIR}/lvis_instruct4v_220k.json",
                   hub=("X2FD/LVIS-Instruct4V", "lvis_instruct4v_220k.json")),
        RemoteFile("coco/val2017.zip", f"{INSTRUCT_DIR}/coco", url="http://images.cocodataset.org/zips/val2017.zip",
                   extract=True),
    ],
    "lrv-instruct": [
        RemoteFile(f"lrv/{name}", f"{INSTRUCT_DIR}/lrv/{name}", manual=LRV_HELP)
        for name in ("filter_cap1.json", "filter_cap_more1.json", "chart_release_update.json")
    ] + [
        RemoteFile("lrv/lrv-vg.zip", f"{INSTRUCT_DIR}/lrv", manual=LRV_HELP, extract=True),
        RemoteFile("lrv/lrv-chart.zip", f"{INSTRUCT_DIR}/lrv", manual=LRV_HELP, extract=True),
    ],
}


# -- post-processing steps ----------------------------------------------------------------------------------------
def convert_ocr_vqa(root: Path) -> None:
    """GIF (first frame) and PNG → JPG, as mix665k names every OCR-VQA image ``*.jpg``."""
    from PIL import Image
    from tqdm import tqdm

    folder = root / INSTRUCT_DIR / "ocr_vqa" / "images"
    todo = [p for p in folder.iterdir() if p.suffix.lower() in (".gif", ".png")] if folder.is_dir() else []
    for path in tqdm(todo, desc="ocr_vqa → jpg", unit="img", disable=len(todo) < 100):
        target = path.with_suffix(".jpg")
        with Image.open(path) as img:
            img.seek(0)
            img.convert("RGB").save(target, "JPEG", quality=95)
        path.unlink()


def _read_json(path: Path) -> list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PrepareError(f"{path}: not found (prepare the data set that provides it first)") from None
    except json.JSONDecodeError as exc:
        raise PrepareError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def shuffle_like_original(entries: list) -> list:
    """The original scripts' order: ``random.seed(7)`` then three shuffles."""
    rng = random.Random(7)
    for _ in range(3):
        rng.shuffle(entries)
    return entries


def mix(root: Path, parts: list[str], output: str) -> None:
    """Concatenate annotation files (paths under the instruct dir) and shuffle them into ``output``."""
    base = root / INSTRUCT_DIR
    merged = [entry for part in parts for entry in _read_json(base / part)]
    _write_json_atomic(base / output, shuffle_like_original(merged))


def convert_lrv(root: Path) -> None:
    """LRV-Instruction (coordinate-free) → LLaVA chat entries with image paths under the instruct dir.

    Each source entry is ``{"image_id", "question", "answer"}``; VG images live in ``lrv/lrv-vg/<id>.jpg``, chart
    images in ``lrv/lrv-chart/<image_id>`` (extension added if missing).
    """
    lrv = root / INSTRUCT_DIR / "lrv"
    out = []
    sources = [("filter_cap1.json", "lrv-vg"), ("filter_cap_more1.json", "lrv-vg"),
               ("chart_release_update.json", "lrv-chart")]
    for name, folder in sources:
        for index, entry in enumerate(_read_json(lrv / name)):
            try:
                image_id, question, answer = str(entry["image_id"]), entry["question"], entry["answer"]
            except (KeyError, TypeError):
                raise PrepareError(f"{lrv / name} entry {index}: expected image_id, question and answer") from None
            image = image_id if Path(image_id).suffix else f"{image_id}.jpg"
            out.append({
                "id": f"lrv-{len(out)}",
                "image": f"lrv/{folder}/{image}",
                "conversations": [{"from": "human", "value": f"<image>\n{question.strip()}"},
                                  {"from": "gpt", "value": answer.strip()}],
            })
    _write_json_atomic(lrv.parent / "lrv_instruct_342k.json", out)


def write_multimodal_only(root: Path) -> None:
    """``llava_v1_5_stripped625k.json``: mix665k without text-only entries (no original script made it)."""
    base = root / INSTRUCT_DIR
    _write_json_atomic(base / "llava_v1_5_stripped625k.json",
                       [e for e in _read_json(base / "llava_v1_5_mix665k.json") if "image" in e])


@dataclass(frozen=True)
class Recipe:
    downloads: list[str]
    steps: list[tuple[str, Callable[[Path], None]]] = field(default_factory=list)


_BASE = ["llava-laion-cc-sbu-558k", "llava-v1.5-instruct"]
_OCR = ("convert OCR-VQA images to JPG", convert_ocr_vqa)
_LVIS_MIX = ("mix LVIS-Instruct-4V", lambda r: mix(r, ["llava_v1_5_mix665k.json", "lvis_instruct4v_220k.json"],
                                                    "llava_v1_5_lvis4v_mix888k.json"))
_LRV = ("convert LRV-Instruct", convert_lrv)
_LRV_MIX = ("mix LRV-Instruct", lambda r: mix(r, ["llava_v1_5_mix665k.json", "lrv_instruct_342k.json"],
                                              "llava_v1_5_lrv_mix1008k.json"))
_ALL_MIX = ("mix LVIS-Instruct-4V + LRV-Instruct", lambda r: mix(
    r, ["llava_v1_5_lvis4v_mix888k.json", "lrv_instruct_342k.json"], "llava_v1_5_lvis4v_lrv_mix1231k.json"))

#: What `prism data prepare ID` does, per data set id (the `llava` presets, plus the raw download groups).
RECIPES: dict[str, Recipe] = {
    "llava-v15": Recipe(_BASE, [_OCR]),
    "llava-multimodal": Recipe(_BASE, [_OCR, ("write multimodal-only mix", write_multimodal_only)]),
    "llava-lvis4v": Recipe([*_BASE, "lvis-instruct4v"], [_OCR, _LVIS_MIX]),
    "llava-lrv": Recipe([*_BASE, "lrv-instruct"], [_OCR, _LRV, _LRV_MIX]),
    "llava-lvis4v-lrv": Recipe([*_BASE, "lvis-instruct4v", "lrv-instruct"],
                               [_OCR, _LVIS_MIX, _LRV, _LRV_MIX, _ALL_MIX]),
    **{name: Recipe([name]) for name in FILES},
}


# -- downloading --------------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def parse_checksums(text: str, source: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <key>`` per line) → {key: hex}."""
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise PrepareError(f"{source} line {n}: expected '<sha256>  <file>', got {line!r}")
        out[parts[1].strip().lstrip("*")] = parts[0].lower()
    return out


def http_download(url: str, target: Path, progress: bool = True) -> None:
    """Download ``url`` to ``target``, resuming a ``target.part`` left by an interrupted run."""
    from tqdm import tqdm

    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is already complete
            os.replace(part, target)
            return
        raise PrepareError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise PrepareError(f"{url}: {exc.reason}") from None
    with response:
        resumed = response.status == 206
        if have and not resumed:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with part.open("ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=target.name, disable=not progress
        ) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise PrepareError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
    os.replace(part, target)


class Preparer:
    def __init__(self, root: Path, *, mirror: str | None = None, checksums: dict[str, str] | None = None,
                 progress: bool = True, log: Callable[[str], None] = print) -> None:
        self.root = root
        self.mirror = mirror.rstrip("/") if mirror else None
        self.checksums = dict(checksums or {})
        self.progress = progress
        self.log = log
        self.downloads = root / ".downloads"

    def _marker(self, rf: RemoteFile) -> Path:
        return self.downloads / (rf.key + ".done")

    def fetch(self, rf: RemoteFile) -> Path:
        target = self.downloads / rf.key
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            return target
        if self.mirror:
            http_download(f"{self.mirror}/{rf.key}", target, self.progress)
        elif rf.hub:
            from huggingface_hub import hf_hub_download

            got = hf_hub_download(rf.hub[0], rf.hub[1], repo_type="dataset", local_dir=target.parent / ".hub")
            os.replace(got, target)
        elif rf.url:
            http_download(rf.url, target, self.progress)
        else:
            raise PrepareError(f"{rf.key}: no public download link. {rf.manual} at {target}")
        expected = rf.sha256 or self.checksums.get(rf.key)
        if expected:
            actual = sha256_of(target)
            if actual != expected:
                target.unlink()
                raise PrepareError(f"{rf.key}: checksum mismatch (expected sha256 {expected}, got {actual}); "
                                   "the download was deleted, run again")
        else:
            self.log(f"  {rf.key}: no known checksum; sha256 {sha256_of(target)}")
        return target

    def install(self, rf: RemoteFile) -> None:
        dest = self.root / rf.dest
        if self._marker(rf).exists() or (not rf.extract and dest.exists()):
            self.log(f"  {rf.key}: already prepared")
            return
        archive = self.fetch(rf)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rf.extract:
            staging = self.downloads / (rf.key + ".extracting")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(staging)
            except zipfile.BadZipFile as exc:
                archive.unlink()
                raise PrepareError(f"{rf.key}: not a valid zip ({exc}); the download was deleted, run again") from None
            dest.mkdir(parents=True, exist_ok=True)
            for item in staging.iterdir():  # merge top-level entries: several archives share a folder (vg/)
                if (dest / item.name).exists():
                    shutil.rmtree(dest / item.name) if (dest / item.name).is_dir() else (dest / item.name).unlink()
                shutil.move(str(item), dest / item.name)
            shutil.rmtree(staging, ignore_errors=True)
        else:
            shutil.copyfile(archive, dest)
        self._marker(rf).write_text("ok")
        archive.unlink()  # the extracted or copied result is what stays
        self.log(f"  {rf.key} → {rf.dest}")

    def run(self, dataset_id: str) -> None:
        if dataset_id not in RECIPES:
            raise PrepareError(f"unknown data set id {dataset_id!r}; choose from {', '.join(RECIPES)}")
        recipe = RECIPES[dataset_id]
        if self.mirror and not self.checksums:
            self._load_mirror_checksums()
        for group in recipe.downloads:
            self.log(f"{group}:")
            for rf in FILES[group]:
                self.install(rf)
        for description, step in recipe.steps:
            self.log(f"{description}")
            step(self.root)
        self.log(f"{dataset_id}: ready under {self.root}")

    def _load_mirror_checksums(self) -> None:
        url = f"{self.mirror}/SHA256SUMS"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                self.checksums = parse_checksums(response.read().decode(), url)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise PrepareError(f"{url}: HTTP {exc.code} {exc.reason}") from None


def prepare(dataset_id: str, root: str | Path, *, mirror: str | None = None, checksums_file: str | None = None,
            progress: bool = True, log: Callable[[str], None] = print) -> None:
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    checksums = None
    if checksums_file:
        checksums = parse_checksums(Path(checksums_file).read_text(), checksums_file)
    Preparer(Path(root).expanduser(), mirror=mirror, checksums=checksums, progress=progress, log=log).run(dataset_id)
