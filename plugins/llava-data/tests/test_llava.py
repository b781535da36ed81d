"""LLaVA data: align/finetune formats, runtime mixtures, and `prism data prepare` against a loopback server."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image
from prism_plugin_llava_data import hooks
from prism_plugin_llava_data.dataset import draw
from prism_plugin_llava_data.prepare import FILES, INSTRUCT_DIR, http_download, shuffle_like_original
from prism_plugin_llava_data.spec import ALIGN_DIR, LlavaSpec

from prism_core.data import BadExampleError
from prism_core.testing.conformance import DatasetConformance
from prism_core.testing.toys import ToyPromptFormat, image_transform, word_tokenizer
from prism_core.types import IGNORE_INDEX

WORDS = ["USER", "ASSISTANT", "describe", "the", "image", "a", "cat", "dog", "what", "is", "it", "hello", "hi"]


def chat(image, *messages):
    entry = {"id": "x", "conversations": [{"from": "gpt" if i % 2 else "human", "value": m}
                                          for i, m in enumerate(messages)]}
    return {**entry, "image": image} if image else entry


def png_bytes(colour="red", fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), colour).save(buf, fmt)
    return buf.getvalue()


def write_llava_tree(root: Path, n_chat=6, n_text=2, n_extra=10):
    """A miniature prepared data root: align captions, mix665k-like chat data, and an extra component."""
    (root / ALIGN_DIR / "00000").mkdir(parents=True)
    (root / ALIGN_DIR / "00000" / "a.jpg").write_bytes(png_bytes(fmt="JPEG"))
    (root / ALIGN_DIR / "chat.json").write_text(json.dumps(
        [chat("00000/a.jpg", "describe the image\n<image>", "a cat")] * 3))
    inst = root / INSTRUCT_DIR
    (inst / "coco").mkdir(parents=True)
    (inst / "coco" / "b.jpg").write_bytes(png_bytes("blue", "JPEG"))
    mix = [chat("coco/b.jpg", "<image>\nwhat is it", "a dog", "hello", "hi") for _ in range(n_chat)]
    mix += [chat(None, "hello", "hi") for _ in range(n_text)]
    (inst / "llava_v1_5_mix665k.json").write_text(json.dumps(mix))
    (inst / "extra.json").write_text(json.dumps([chat("coco/b.jpg", "what is it", "a cat")] * n_extra))
    return root


def build(spec, split="train", stage="finetune"):
    return spec.build(tokenizer=word_tokenizer(WORDS), prompt_format=ToyPromptFormat(),
                      image_transform=image_transform(), split=split, stage=stage)


def test_align_stage_reads_captions_with_eos_and_no_prompt(tmp_path):
    ds = build(LlavaSpec.from_preset("llava-v15", root=str(write_llava_tree(tmp_path))), stage="align")
    ex = ds[0]
    tok = word_tokenizer(WORDS)
    assert tok.convert_ids_to_tokens(ex.input_ids.tolist()) == ["<s>", "a", "cat", "</s>"]
    assert ex.labels[0] == IGNORE_INDEX and ex.labels[1:].tolist() == ex.input_ids[1:].tolist()
    assert ex.source == "chat.json#0" and ex.has_image


def test_finetune_preset_mixes_image_and_text_only_and_multimodal_preset_drops_text(tmp_path):
    root = str(write_llava_tree(tmp_path))
    ds = build(LlavaSpec.from_preset("llava-v15", root=root))
    assert Counter(has for has, _ in ds.modality_lengths()) == {True: 6, False: 2}
    supervised = [t for t in ds[0].labels.tolist() if t != IGNORE_INDEX]
    assert len(supervised) == 5  # "a dog </s>" and "hi </s>"
    assert len(build(LlavaSpec.from_preset("llava-multimodal", root=root))) == 6


def test_weights_and_sample_counts_set_component_sizes_reproducibly(tmp_path):
    root = write_llava_tree(tmp_path)
    spec = LlavaSpec.from_preset("llava-v15", root=str(root), finetune=[
        {"annotations": f"{INSTRUCT_DIR}/llava_v1_5_mix665k.json", "images": INSTRUCT_DIR, "weight": 0.5},
        {"annotations": f"{INSTRUCT_DIR}/extra.json", "images": INSTRUCT_DIR, "samples": 25},
    ])
    ds = build(spec)
    mix, extra = f"{INSTRUCT_DIR}/llava_v1_5_mix665k.json", f"{INSTRUCT_DIR}/extra.json"
    assert Counter(ds.component_names) == {mix: 4, extra: 25}
    assert [r.source for r in build(spec).records] == [r.source for r in ds.records], "same seed, same draw"


def test_weighted_draws_are_uniform_over_entries_across_seeds():
    import random

    hits = Counter()
    for seed in range(4000):
        hits.update(draw(5, 20, random.Random(seed)))  # weight 0.25 of 20 entries
    assert all(abs(hits[i] / 4000 - 0.25) < 0.03 for i in range(20)), hits
    assert sorted(Counter(draw(45, 20, random.Random(0))).values()) == [2] * 15 + [3] * 5  # weight 2.25


def test_bad_component_file_errors_name_the_file(tmp_path):
    root = write_llava_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"lvis_instruct4v_220k\.json.*prism data prepare llava-lvis4v"):
        build(LlavaSpec.from_preset("llava-lvis4v", root=str(root)))
    (root / INSTRUCT_DIR / "llava_v1_5_mix665k.json").write_text('[{"conversations": [{"from": "gpt"')
    with pytest.raises(BadExampleError, match=r"llava_v1_5_mix665k\.json: malformed JSON at line 1"):
        build(LlavaSpec.from_preset("llava-v15", root=str(root)))


# -- `prism data prepare` end to end -------------------------------------------------------------------------------
class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range support (Python's handler ignores Range)."""

    served: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        RangeHandler.served.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def mirror(tmp_path):
    site = tmp_path / "site"

    def put(key, data):
        (site / key).parent.mkdir(parents=True, exist_ok=True)
        (site / key).write_bytes(data)

    def zipped(files):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return buf.getvalue()

    put("llava-pretrain/blip_laion_cc_sbu_558k.json",
        json.dumps([chat("00000/a.jpg", "describe\n<image>", "a cat")]).encode())
    put("llava-pretrain/images.zip", zipped({"00000/a.jpg": png_bytes(fmt="JPEG")}))
    mix = [chat("coco/train2017/c.jpg", "<image>\nwhat", "a cat"), chat("ocr_vqa/images/o.jpg", "<image>\nwhat", "a"),
           chat(None, "hello", "hi")]
    put("llava-instruct/llava_v1_5_mix665k.json", json.dumps(mix).encode())
    put("coco/train2017.zip", zipped({"train2017/c.jpg": png_bytes(fmt="JPEG")}))
    put("gqa/images.zip", zipped({"images/g.jpg": png_bytes(fmt="JPEG")}))
    put("ocr_vqa/images.zip", zipped({"images/o.gif": png_bytes(fmt="GIF"), "images/p.png": png_bytes()}))
    put("textvqa/train_val_images.zip", zipped({"train_images/t.jpg": png_bytes(fmt="JPEG")}))
    put("vg/images.zip", zipped({"VG_100K/v.jpg": png_bytes(fmt="JPEG")}))
    put("vg/images2.zip", zipped({"VG_100K_2/w.jpg": png_bytes(fmt="JPEG")}))
    put("lvis/lvis_instruct4v_220k.json", json.dumps([chat("coco/val2017/l.jpg", "<image>\nq", "a")] * 2).encode())
    put("coco/val2017.zip", zipped({"val2017/l.jpg": png_bytes(fmt="JPEG")}))
    put("lrv/filter_cap1.json", json.dumps([{"image_id": "1", "question": "q1", "answer": "a1"}]).encode())
    put("lrv/filter_cap_more1.json", json.dumps([{"image_id": "2", "question": "q2", "answer": "a2"}]).encode())
    put("lrv/chart_release_update.json", json.dumps([{"image_id": "c.png", "question": "q", "answer": "a"}]).encode())
    put("lrv/lrv-vg.zip", zipped({"lrv-vg/1.jpg": png_bytes(fmt="JPEG"), "lrv-vg/2.jpg": png_bytes(fmt="JPEG")}))
    put("lrv/lrv-chart.zip", zipped({"lrv-chart/c.png": png_bytes()}))
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(site)}" for p in site.rglob("*")
            if p.is_file()]
    put("SHA256SUMS", "\n".join(sums).encode())

    handler = lambda *a, **kw: RangeHandler(*a, directory=str(site), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RangeHandler.served = []
    yield f"http://127.0.0.1:{server.server_address[1]}", site
    server.shutdown()


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="prism")
    hooks.prism_add_cli_commands(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_prepare_end_to_end_then_every_preset_loads(tmp_path, mirror, monkeypatch):
    url, _ = mirror
    root = tmp_path / "data"
    monkeypatch.setenv("PRISM_DATA_MIRROR", url)
    assert run_cli("data", "prepare", "llava-lvis4v-lrv", "--root", str(root), "--quiet") == 0
    inst = root / INSTRUCT_DIR
    assert (root / ALIGN_DIR / "chat.json").is_file() and (root / ALIGN_DIR / "00000" / "a.jpg").is_file()
    assert (inst / "coco/train2017/c.jpg").is_file() and (inst / "coco/val2017/l.jpg").is_file()
    assert (inst / "vg/VG_100K/v.jpg").is_file() and (inst / "vg/VG_100K_2/w.jpg").is_file()
    assert sorted(p.name for p in (inst / "ocr_vqa/images").iterdir()) == ["o.jpg", "p.jpg"]
    lrv = json.loads((inst / "lrv_instruct_342k.json").read_text())
    assert [e["image"] for e in lrv] == ["lrv/lrv-vg/1.jpg", "lrv/lrv-vg/2.jpg", "lrv/lrv-chart/c.png"]
    assert len(json.loads((inst / "llava_v1_5_lvis4v_lrv_mix1231k.json").read_text())) == 3 + 2 + 3
    merged = json.loads((inst / "llava_v1_5_lvis4v_mix888k.json").read_text())
    originals = json.loads((inst / "llava_v1_5_mix665k.json").read_text())
    lvis = json.loads((inst / "lvis_instruct4v_220k.json").read_text())
    assert merged == shuffle_like_original(originals + lvis)
    for preset in ("llava-v15", "llava-lvis4v", "llava-lrv", "llava-lvis4v-lrv"):
        spec = LlavaSpec.from_preset(preset, root=str(root), verify_images=True)
        ds = build(spec)
        assert all(ds[i].input_ids.numel() > 1 for i in range(len(ds)))
    assert run_cli("data", "prepare", "llava-multimodal", "--root", str(root), "--quiet") == 0
    assert len(json.loads((inst / "llava_v1_5_stripped625k.json").read_text())) == 2
    # a second run downloads nothing
    RangeHandler.served = []
    assert run_cli("data", "prepare", "llava-v15", "--root", str(root), "--quiet") == 0
    assert [p for p, _ in RangeHandler.served] == ["/SHA256SUMS"]


def test_prepare_rejects_a_corrupted_download_naming_it(tmp_path, mirror, capsys):
    url, site = mirror
    (site / "gqa/images.zip").write_bytes(b"tampered")
    assert run_cli("data", "prepare", "llava-v15", "--root", str(tmp_path), "--mirror", url, "--quiet") == 1
    err = capsys.readouterr().err
    assert "gqa/images.zip: checksum mismatch" in err
    assert not (tmp_path / ".downloads/gqa/images.zip").exists()


def test_http_download_resumes_a_partial_file_with_a_range_request(tmp_path, mirror):
    url, site = mirror
    data = (site / "coco/train2017.zip").read_bytes()
    target = tmp_path / "t.zip"
    (tmp_path / "t.zip.part").write_bytes(data[:10])
    RangeHandler.served = []
    http_download(f"{url}/coco/train2017.zip", target, progress=False)
    assert target.read_bytes() == data and RangeHandler.served == [("/coco/train2017.zip", "bytes=10-")]


def test_manual_files_without_a_mirror_say_where_to_put_them(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PRISM_DATA_MIRROR", raising=False)
    assert run_cli("data", "prepare", "lrv-instruct", "--root", str(tmp_path), "--quiet") == 1
    assert "lrv/filter_cap1.json: no public download link" in capsys.readouterr().err
    assert all(rf.hub or rf.url or rf.manual for group in FILES.values() for rf in group)


class TestLlavaConformance(DatasetConformance):
    spec = LlavaSpec.from_preset("llava-v15")

    @pytest.fixture
    def dataset(self, tmp_path):
        return build(LlavaSpec.from_preset("llava-v15", root=str(write_llava_tree(tmp_path))))


RUN = """schema = 1
[model]
vision = {{ kind = "clip", preset = "clip-vit-l-336px" }}
llm = {{ kind = "llama2", preset = "vicuna-v15-7b" }}
projector = {{ kind = "gelu-mlp" }}
[data]
kind = "llava"
preset = "llava-v15"
{data}
[train]
stage = "{stage}"
"""


def test_the_stage_is_said_once_in_train_stage_and_picks_the_components():
    from prism_core.spec import SpecError, loads_spec

    with pytest.raises(SpecError) as raised:
        loads_spec(RUN.format(data='stage = "align"', stage="align"))
    assert "data.stage: no longer a field here: the stage is said once, in train.stage" in str(raised.value)
    # The run spec reports these at data.<field> (core's RunSpec); checked here without the model plugins.
    empty = LlavaSpec.from_preset("llava-v15", align=())
    assert list(empty.stage_problems("align")) == [("align", "no components for train.stage = 'align'")]
    mix = LlavaSpec.from_preset("llava-v15")
    assert mix.components("full-finetune") == mix.finetune and mix.components("align") == mix.align
    assert not list(mix.stage_problems("finetune"))
