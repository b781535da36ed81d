"""Bad data, in both policies. Under "skip" every bad image, over-long conversation and bad entry is counted by reason
and file, said at the end of each epoch and in metrics.jsonl, and replaced so every step keeps its batch; under
"error" the first one is an exit 2 naming its file and entry, without a traceback (``--debug`` shows it).
``prism data check`` lists every problem up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from prism_core.cli.main import main as prism
from prism_core.train.trackers import read_metrics
from tests.reliability.conftest import prism_run, run_worker
from tests.train.toy_run import spec_toml

LONG = "describe " * 20  # 180 byte tokens: with max_length 64 nothing of the answer survives


def chat(question: str, answer: str, image: str | None = None) -> dict:
    entry = {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
    return {**entry, "image": image} if image else entry


ALL_BAD = (2, 5, 7, 9, 11)


def write_data(root: Path, bad: tuple[int, ...] = ALL_BAD) -> Path:
    """12 image entries and 4 text-only ones, with the ``bad`` ones of: a corrupt image (#2), a missing one (#5), an
    over-long conversation (#7), roles out of order (#9), a byte that is not UTF-8 (#11)."""
    root.mkdir(parents=True, exist_ok=True)
    colours = ["red", "green", "blue", "yellow"]
    entries = []
    for i in range(12):
        Image.new("RGB", (16, 16), colours[i % 4]).save(root / f"{i}.png")
        entries.append(chat("<image>\nwhat colour?", colours[i % 4], f"{i}.png"))
    entries += [chat("say hi", "hi"), chat("say yes", "yes"), chat("say no", "no"), chat("say ok", "ok")]
    if 2 in bad:
        (root / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    if 5 in bad:
        entries[5]["image"] = "gone.png"
    if 7 in bad:
        entries[7] = chat("<image>\n" + LONG, "blue", "7.png")
    if 9 in bad:
        entries[9] = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}],
                      "image": "9.png"}
    if 11 in bad:
        entries[11] = chat("<image>\nwhat colour?", "MARKER", "11.png")
    text = json.dumps(entries).encode().replace(b"MARKER", b"r\xe9d")  # Latin-1 bytes in a UTF-8 file
    (root / "data.json").write_bytes(text)
    return root / "data.json"


def data_spec(tmp_path: Path, annotations: Path, policy: str, run_name: str = "toy", **train) -> Path:
    spec = tmp_path / f"{run_name}.toml"
    table = {"per_device_batch_size": 1, "global_batch_size": 2, "max_steps": None, "epochs": 3,
             "max_length": 64, **train}
    spec.write_text(spec_toml(str(tmp_path), run_name=run_name,
                              data={"kind": "train-files", "annotations": str(annotations),
                                    "on_bad_example": policy}, **table))
    return spec


def test_skipped_examples_are_counted_said_each_epoch_and_replaced(tmp_path, toy_registry, capsys):
    annotations = write_data(tmp_path / "data")
    run = prism_run(capsys, str(data_spec(tmp_path, annotations, "skip")))
    run.expect(0, "data.json: skipped 2 bad entries", "data.json#9: roles must alternate",
               "data.json#11: turn 1 'value' is not valid UTF-8 text (byte 0xe9 at character 1)")
    # #9 and #11 are dropped when the file is read: 10 image entries (3 of them bad) and 4 text-only ones remain
    epochs = [line for line in run.err.splitlines() if "skipped and replaced" in line]
    assert len(epochs) == 3, run
    for epoch, line in enumerate(epochs):
        assert line.startswith(f"prism-run: epoch {epoch} (to step {7 * (epoch + 1)}): 3 bad examples skipped")
        assert "2 bad-image, 1 too-long; by file: data.json 3" in line
        assert "data.json#2: " in line and "corrupt image" in line and "gone.png: missing image file" in line
    records = read_metrics(tmp_path / "toy")
    assert [r["step"] for r in records] == list(range(1, 22))  # 7 steps an epoch, none lost to the skips
    last = records[-1]
    assert last["skipped_examples"] == 2 + 3 * 3
    assert (last["skipped/bad-entry"], last["skipped/bad-image"], last["skipped/too-long"]) == (2, 6, 3)
    assert last["skipped/bad-image/data.json"] == 6 and last["skipped/too-long/data.json"] == 3
    assert records[6]["skipped/bad-image/data.json"] == 2  # the end of epoch 0


def test_skip_counts_survive_a_resume(tmp_path):
    annotations = write_data(tmp_path / "data")
    whole = run_worker(str(data_spec(tmp_path, annotations, "skip", run_name="whole", save_every=3, max_steps=10)))
    assert whole.returncode == 0, whole.stderr
    spec = data_spec(tmp_path, annotations, "skip", run_name="cut", save_every=3, max_steps=10)
    stopped = run_worker(str(spec), PRISM_TEST_SIGTERM_AT_STEP="5")
    assert stopped.returncode == 143, stopped.stderr
    resumed = run_worker("--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr
    reference, cut = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    keys = ["step", "loss", *(k for k in reference[-1] if k.startswith("skipped"))]
    assert [{k: r.get(k) for k in keys} for r in cut] == [{k: r.get(k) for k in keys} for r in reference]
    assert reference[-1]["skipped_examples"] > 2


ERRORS = {
    "corrupt-image": (2, "data.json#2: ", "2.png: corrupt image"),
    "missing-image": (5, "data.json#5: ", "gone.png: missing image file"),
    "over-long": (7, "data.json#7: no supervised token left after truncation to 48 tokens", "max_length=64"),
    "not-utf8": (11, "data.json entry 11: turn 1 'value' is not valid UTF-8 text", "byte 0xe9"),
    "bad-entry": (9, "data.json entry 9: roles must alternate", "data.json"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_under_error_the_first_bad_input_exits_2_naming_file_and_entry(tmp_path, toy_registry, capsys, case):
    index, *fragments = ERRORS[case]
    annotations = write_data(tmp_path / "data", bad=(index,))
    prism_run(capsys, str(data_spec(tmp_path, annotations, "error"))).expect(2, *fragments)


def test_bad_data_under_the_real_entry_point_and_with_loader_workers(tmp_path):
    annotations = write_data(tmp_path / "data", bad=(2,))
    spec = data_spec(tmp_path, annotations, "error", num_workers=2)
    out = run_worker(str(spec))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "prism-run: data.json#2: " in out.stderr and "DataLoader worker" not in out.stderr
    debug = run_worker(str(data_spec(tmp_path, annotations, "error", run_name="debug", num_workers=2)), "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "BadExampleError" in debug.stderr


def test_unreadable_annotation_files_exit_2_naming_them(tmp_path, toy_registry, capsys):
    missing = tmp_path / "nope.json"
    prism_run(capsys, str(data_spec(tmp_path, missing, "error"))).expect(2, f"{missing}: annotation file not found")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"conversations": [}]')
    prism_run(capsys, str(data_spec(tmp_path, broken, "skip"))).expect(
        2, f"{broken}: malformed JSON at line 1, column 21: Expecting value")


def test_data_check_lists_every_problem_before_a_run(tmp_path, toy_registry, capsys):
    annotations = write_data(tmp_path / "data")
    spec = data_spec(tmp_path, annotations, "error")
    capsys.readouterr()
    assert prism(["data", "check", str(spec), "--workers", "2", "--quiet"]) == 1
    out = capsys.readouterr().out
    problems = {line.split(": ")[0]: line for line in out.splitlines() if line.startswith("data.json#")}
    assert sorted(problems) == ["data.json#11", "data.json#2", "data.json#5", "data.json#7", "data.json#9"]
    assert "bad-image" in problems["data.json#2"] and "too-long" in problems["data.json#7"]
    assert "5 problems in 14 examples (10 with an image)" in out
    assert "2 bad-entry" in out and "2 bad-image" in out and "1 too-long" in out and "by file: data.json 5" in out
    assert not (tmp_path / "toy").exists()  # nothing trained
    clean = data_spec(tmp_path, write_data(tmp_path / "clean", bad=()), "error", run_name="clean")
    assert prism(["data", "check", str(clean), "--quiet"]) == 0
    assert "0 problems in 16 examples (12 with an image)" in capsys.readouterr().out
