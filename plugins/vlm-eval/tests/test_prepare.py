"""``prism data prepare KIND`` against a loopback mirror: the benchmark lands where its task reads it, shared
images once, checksums checked; what cannot be downloaded says where to put it."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
import zipfile

import pytest
from prism_plugin_vlm_eval.hooks import BENCHMARKS
from prism_plugin_vlm_eval.prepare import FILES, required_paths
from prism_plugin_vlm_eval.spec import SPECS
from vlm_eval_fixtures import ORACLE, write_all
from vlm_eval_oracle import OracleVLM

import prism_core
from prism_core.cli.main import main


def _zip(source, names):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.write(source / name, name)
    return buffer.getvalue()


@pytest.fixture
def mirror(tmp_path):
    """The benchmarks' archives as their sources publish them, built from the fixtures, served over loopback."""
    source = write_all(tmp_path / "source")
    site = tmp_path / "site"
    served: list[str] = []

    def put(key, data):
        (site / key).parent.mkdir(parents=True, exist_ok=True)
        (site / key).write_bytes(data)

    put("vlm-eval/vqa-v2/v2_Questions_Val_mscoco.zip",
        _zip(source / "vqa-v2", ["v2_OpenEnded_mscoco_val2014_questions.json"]))
    put("vlm-eval/vqa-v2/v2_Annotations_Val_mscoco.zip",
        _zip(source / "vqa-v2", ["v2_mscoco_val2014_annotations.json"]))
    put("vlm-eval/coco/val2014.zip", _zip(source / "coco", [f"val2014/COCO_val2014_{i:012d}.jpg" for i in (1, 2)]))
    for split in ("adversarial", "popular", "random"):
        put(f"vlm-eval/pope/coco_pope_{split}.json", (source / f"pope/coco_pope_{split}.json").read_bytes())
    put("vlm-eval/refer/refcoco.zip", _zip(source, ["refcoco/instances.json", "refcoco/refs(unc).p"]))
    put("vlm-eval/coco/train2014.zip", _zip(source / "coco", ["train2014/COCO_train2014_000000000007.jpg"]))
    put("vlm-eval/ocid-ref/val_expressions.json", (source / "ocid-ref/val_expressions.json").read_bytes())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            served.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", site, served
    server.shutdown()


def prepare(*args):
    return main(["data", "prepare", *args, "--quiet"])


def test_prepared_benchmarks_evaluate_and_shared_images_come_once(tmp_path, mirror):
    url, _, served = mirror
    root = tmp_path / "data"
    assert prepare("vqa-v2", "--root", str(root), "--mirror", url) == 0
    assert prepare("pope", "--root", str(root), "--mirror", url) == 0  # COCO val2014 is there already
    assert prepare("refcoco", "--root", str(root), "--mirror", url) == 0
    assert served.count("/vlm-eval/coco/val2014.zip") == 1
    for kind in ("vqa-v2", "pope", "refcoco"):
        assert all((root / path).exists() for path in required_paths(kind))
        report = prism_core.evaluate(OracleVLM(ORACLE[kind]), [kind], root=root, progress=False)
        assert report["tasks"][kind]["metrics"]["accuracy"] == 1.0
    served.clear()
    assert prepare("pope", "--root", str(root), "--mirror", url) == 0  # done: nothing fetched again
    assert [p for p in served if not p.endswith("SHA256SUMS")] == []


def test_a_checksum_mismatch_deletes_the_download_and_names_it(tmp_path, mirror, capsys):
    url, _, _ = mirror
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(b'something else').hexdigest()}  vlm-eval/pope/coco_pope_random.json\n")
    assert prepare("pope", "--root", str(tmp_path / "data"), "--mirror", url, "--checksums", str(sums)) == 1
    err = capsys.readouterr().err
    assert "vlm-eval/pope/coco_pope_random.json: checksum mismatch" in err
    assert not (tmp_path / "data/.downloads/vlm-eval/pope/coco_pope_random.json").exists()


def test_what_has_no_download_link_says_where_to_put_it(tmp_path, mirror, capsys):
    url, _, _ = mirror
    root = tmp_path / "data"
    assert prepare("ocid-ref", "--root", str(root), "--mirror", url) == 1
    assert f"{root / 'ocid-ref/OCID-dataset'}: not downloadable automatically" in capsys.readouterr().err
    (root / "ocid-ref/OCID-dataset").mkdir()
    assert prepare("ocid-ref", "--root", str(root), "--mirror", url) == 0


def test_an_archive_laid_out_otherwise_is_reported(tmp_path, mirror, capsys):
    url, site, _ = mirror
    (site / "vlm-eval/coco/train2014.zip").write_bytes(_zip(write_all(tmp_path / "other") / "coco/train2014",
                                                            ["COCO_train2014_000000000007.jpg"]))
    assert prepare("refcoco", "--root", str(tmp_path / "data"), "--mirror", url) == 1
    assert "coco/train2014 is still missing (the archives' layout changed?)" in capsys.readouterr().err


def test_every_benchmark_can_be_prepared_and_is_listed(capsys):
    assert set(BENCHMARKS) == set(FILES) == {spec.kind for spec in SPECS}
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    listing = capsys.readouterr().out
    assert all(f"  {kind} " in listing for kind in BENCHMARKS)
    assert "llava-v15" in listing  # one command for every plugin that downloads data
