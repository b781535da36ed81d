"""``lmms-eval --model prism`` offline on a tiny local task (generation and multiple choice): the answers are the
ones prism gives for the same prompts. Needs the ``lmms-eval`` extra and the tiny SigLIP / Llama plugins (the
``vlm_eval_lmms`` nox session installs them); skipped without, failed without under PRISM_REQUIRE_LMMS_EVAL=1."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
NEEDED = ("lmms_eval", "prism_plugin_siglip", "prism_plugin_llama2", "prism_plugin_projectors",
          "prism_plugin_prompt_formats")


def _require() -> None:
    import importlib.util

    absent = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if absent:
        if os.environ.get("PRISM_REQUIRE_LMMS_EVAL"):
            pytest.fail(f"PRISM_REQUIRE_LMMS_EVAL is set but {', '.join(absent)} cannot be imported")
        pytest.skip(f"needs {', '.join(absent)} (pip install 'prism-plugin-vlm-eval[lmms-eval]')")


COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}
TASKS = {
    "prism_tiny_vqa": "output_type: generate_until\ndoc_to_target: answer\ngeneration_kwargs:\n  max_new_tokens: 5\n"
                      "  until: [\"\\n\"]\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n"
                      "    higher_is_better: true\n",
    "prism_tiny_choice": "output_type: multiple_choice\ndoc_to_choice: [\"red\", \"blue\", \"green\"]\n"
                         "doc_to_target: label\nmetric_list:\n  - metric: acc\n    aggregation: mean\n"
                         "    higher_is_better: true\n",
}
UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]
'''


def _write_tasks(tmp_path: Path) -> tuple[Path, list[dict]]:
    from PIL import Image

    data, tasks = tmp_path / "data", tmp_path / "tasks"
    data.mkdir()
    tasks.mkdir()
    docs = []
    for i, colour in enumerate(["red", "blue", "green", "red"]):
        Image.new("RGB", (40, 40), COLOURS[colour]).save(data / f"{i}.png")
        docs.append({"image": str(data / f"{i}.png"), "question": f"What colour is square {i}?", "answer": colour,
                     "label": list(COLOURS).index(colour)})
    (data / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "prism_tiny_utils.py").write_text(UTILS)
    for name, body in TASKS.items():
        (tasks / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data / 'docs.jsonl'}\n"
            "test_split: test\ndoc_to_visual: !function prism_tiny_utils.doc_to_visual\n"
            "doc_to_text: !function prism_tiny_utils.doc_to_text\n" + body)
    return tasks, docs


def _samples(out: Path, task: str) -> list[dict]:
    [path] = out.rglob(f"*_samples_{task}.jsonl")
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])


def test_lmms_eval_runs_a_local_task_with_a_prism_model(tmp_path):
    _require()
    import torch
    from PIL import Image
    from prism_plugin_vlm_eval.prompts import prompt

    from prism_core import compose, load, save
    from prism_core.prompting import answer_gap, continuation_ids, encode_prompt

    torch.manual_seed(0)
    vlm = compose(vision={"kind": "siglip", "preset": "siglip-tiny", "image_size": 40}, projector="gelu-mlp",
                  llm="llama-tiny", prompt_format="pure")
    model_dir = save(vlm, tmp_path / "model")
    tasks, docs = _write_tasks(tmp_path)
    script = Path(sys.executable).with_name("lmms-eval")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "lmms_eval"]
    out = subprocess.run([*command, "--model", "prism", "--model_args", f"pretrained={model_dir},device=cpu",
                          "--tasks", ",".join(TASKS), "--include_path", str(tasks), "--batch_size", "3",
                          "--output_path", str(tmp_path / "out"), "--log_samples"],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    [results] = (tmp_path / "out").rglob("*_results.json")
    assert set(json.loads(results.read_text())["results"]) == set(TASKS)

    vlm = load(model_dir)
    for sample, doc in zip(_samples(tmp_path / "out", "prism_tiny_vqa"), docs, strict=True):
        with Image.open(doc["image"]) as image:
            expected = vlm.generate(image.convert("RGB"), prompt(vlm, doc["question"]), do_sample=False,
                                    max_new_tokens=5)
        assert sample["filtered_resps"] in (expected.split("\n")[0], [expected.split("\n")[0]])

    # Multiple choice: lmms-eval gets each choice's mean negative log-likelihood per token; times the number of
    # tokens that is the choice's summed log-probability, whose softmax prism's own scoring gives.
    tokenizer, gap = vlm.tokenizer, answer_gap(vlm.prompt_format)
    for sample, doc in zip(_samples(tmp_path / "out", "prism_tiny_choice"), docs, strict=True):
        text = prompt(vlm, doc["question"])
        lengths = [len(continuation_ids(tokenizer, encode_prompt(tokenizer, text), text, gap + c)) for c in COLOURS]
        log_probs = [-float(nll) * n for (nll, _), n in zip(sample["filtered_resps"], lengths, strict=True)]
        total = sum(math.exp(v) for v in log_probs)
        with Image.open(doc["image"]) as image:
            expected = vlm.score(image.convert("RGB"), text, list(COLOURS))
        assert [math.exp(v) / total for v in log_probs] == pytest.approx(expected, rel=1e-3)
        assert sample["acc"] == float(min(range(3), key=lambda i: float(sample["filtered_resps"][i][0]))
                                      == doc["label"])
