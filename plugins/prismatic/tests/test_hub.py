"""Hub push → pull → load against a loopback Hub (127.0.0.1) and into a local folder; the generated model card."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from prism_plugin_llava_data.spec import LlavaSpec
from prism_plugin_prismatic.hub import MODEL_FILES, HubError, model_card, pull_from_hub, push_to_hub
from prism_plugin_prismatic.recipes import recipe_toml
from prism_plugin_projectors.spec import GeluMLPProjectorSpec

import prism_core
from prism_core.composition import build
from prism_core.registry import use_registry
from prism_core.spec import ModelSpec, structure
from prism_core.testing.fakes import fake_registry

sys.path.insert(0, str(Path(__file__).parent))
from loopback_hub import LoopbackHub

TOKEN = "hf_loopback_owner_token"


@pytest.fixture(autouse=True)
def registry():
    with use_registry(fake_registry(extra=[GeluMLPProjectorSpec, LlavaSpec])) as r:
        yield r


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The loopback Hub, with huggingface_hub pointed at it as HF_ENDPOINT would (constants are read at import)."""
    with LoopbackHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def _model(seed: int = 3):
    spec = structure({"vision": {"kind": "fake-vit"}, "llm": {"kind": "fake-llama"}, "projector": {"kind": "gelu-mlp"},
                      "seed": seed}, ModelSpec)
    return build(spec).eval()


def _recipe_file(tmp_path: Path) -> Path:
    """The released recipe as a spec file (the fake registry used here serves no named specs)."""
    path = tmp_path / "prism-dinosiglip+7b.toml"
    path.write_text(recipe_toml("prism-dinosiglip+7b"))
    return path


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_push_pull_load_round_trip_through_the_loopback_hub(hub, tmp_path):
    vlm = _model()
    url = push_to_hub(vlm, "me/tiny-vlm", token=TOKEN, training_spec=_recipe_file(tmp_path))
    sha = hub.repos["me/tiny-vlm"].branches["main"]
    assert url == f"{hub.url}/me/tiny-vlm/commit/{sha}"
    assert set(hub.files("me/tiny-vlm")) == {*MODEL_FILES, "README.md"}
    assert all(auth == f"Bearer {TOKEN}" for method, _, auth in hub.log if method == "POST")
    local = pull_from_hub("me/tiny-vlm")
    assert local.parent.name == "snapshots" and local.name == sha  # the Hub cache layout, at the pushed commit
    assert (local / "model.safetensors").read_bytes() == hub.files("me/tiny-vlm")["model.safetensors"]
    assert _same_weights(prism_core.load(local), vlm)
    assert "llava-lvis4v-lrv" in (local / "README.md").read_text()


def test_revision_branch_and_offline_cache(hub, monkeypatch):
    first, second = _model(3), _model(4)
    push_to_hub(first, "me/vlm", token=TOKEN)
    push_to_hub(second, "me/vlm", token=TOKEN, revision="dev")
    assert set(hub.repos["me/vlm"].branches) == {"main", "dev"}
    assert _same_weights(prism_core.load(pull_from_hub("me/vlm", revision="dev")), second)
    assert _same_weights(prism_core.load(pull_from_hub("me/vlm")), first)
    with pytest.raises(HubError, match="no such revision"):
        pull_from_hub("me/vlm", revision="nope")
    # offline: the cache answers, and no request reaches the server
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests = len(hub.log)
    assert _same_weights(prism_core.load(pull_from_hub("me/vlm", revision="dev")), second)
    assert len(hub.log) == requests
    with pytest.raises(HubError, match=r"offline mode .* not in the cache"):
        pull_from_hub("me/never-pulled")
    assert len(hub.log) == requests


def test_private_repo_needs_the_token(hub, tmp_path):
    push_to_hub(_model(), "me/secret", token=TOKEN, private=True)
    with pytest.raises(HubError, match="private and not visible without its token"):
        pull_from_hub("me/secret", cache_dir=tmp_path / "other-cache")
    assert hub.log[-1][2] is None  # nothing was sent as a token
    local = pull_from_hub("me/secret", token=TOKEN, cache_dir=tmp_path / "other-cache")
    assert hub.log[-1][2] == f"Bearer {TOKEN}" and (local / "model.toml").is_file()


def test_pull_into_a_local_folder_and_push_from_a_saved_directory(hub, tmp_path):
    saved = prism_core.save(_model(), tmp_path / "saved")
    push_to_hub(saved, "me/from-dir", token=TOKEN)
    out = pull_from_hub("me/from-dir", local_dir=tmp_path / "plain")
    assert out == tmp_path / "plain" and {p.name for p in out.iterdir() if p.is_file()} >= {*MODEL_FILES, "README.md"}
    assert _same_weights(prism_core.load(out), prism_core.load(saved))
    with pytest.raises(FileNotFoundError, match=r"not a saved prism model: .*model\.toml"):
        push_to_hub(tmp_path, "me/nothing", token=TOKEN)


def test_model_card_names_the_composition_and_training_data(tmp_path):
    saved = prism_core.save(_model(), tmp_path / "m")
    card = model_card(saved, "me/vlm", training_spec=_recipe_file(tmp_path))
    assert card.startswith("---\nlibrary_name: prism\n")
    assert "| Vision backbone | `fake-vit` |" in card and "| Projector | `gelu-mlp` |" in card
    assert "| Language model | `fake-llama` |" in card and "| Prompt format | `fake-pure` |" in card
    assert "`llava` (preset `llava-lvis4v-lrv`); stage `finetune`, 2 epoch(s), learning rate 2e-05." in card
    assert "- `download/llava-v1.5-instruct/lrv_instruct_342k.json`" in card
    assert 'prism_core.load("me/vlm")' in card
    assert "Not recorded with this upload." in model_card(saved, "me/vlm")


def _run_dir(tmp_path: Path) -> Path:
    """A finished run directory as prism-run leaves it: spec.toml, metrics.jsonl, eval.json and the final model/."""
    import json

    from prism_core.train.trackers import JsonLinesTracker

    run = tmp_path / "runs" / "tiny-20261201-120000"
    prism_core.save(_model(), run / "model")
    (run / "spec.toml").write_text(recipe_toml("prism-dinosiglip+7b"))
    tracker = JsonLinesTracker(run)
    for step in range(1, 11):
        tracker.log({"loss": 2.0 / step, "learning_rate": 1e-3, "grad_norm": 1.0 / step}, step)
    tracker.close()
    by_type = {"colour": {"accuracy": 0.9, "num_examples": 10}, "shape": {"accuracy": 0.7, "num_examples": 10}}
    blind = {"colour": {"accuracy": 0.2, "num_examples": 10}, "shape": {"accuracy": 0.3, "num_examples": 10}}
    (run / "eval.json").write_text(json.dumps({
        "split": "test", "with_image": {"accuracy": 0.8, "num_examples": 20, "by_type": by_type},
        "blind": {"accuracy": 0.25, "num_examples": 20, "by_type": blind},
        "chance": {"colour": 1 / 6, "shape": 0.25}, "samples": []}))
    return run


def test_pushing_a_run_puts_its_evaluation_and_curves_in_the_card(hub, tmp_path):
    pytest.importorskip("matplotlib")
    run = _run_dir(tmp_path)
    push_to_hub(run, "me/run-vlm", token=TOKEN)
    files = hub.files("me/run-vlm")
    assert set(files) == {*MODEL_FILES, "README.md", "curves.png"}
    assert files["model.safetensors"] == (run / "model" / "model.safetensors").read_bytes()  # the run's final model
    assert files["curves.png"].startswith(b"\x89PNG\r\n\x1a\n")  # drawn at push time from metrics.jsonl
    card = files["README.md"].decode()
    assert "## Evaluation" in card and "Held-out exact match, `eval.json`, test split." in card
    assert "colour               90.0%      20.0%    16.7%     10" in card  # the table prism eval prints
    assert "overall              80.0%      25.0%    20.8%     20" in card
    assert "](curves.png)" in card
    assert "`llava` (preset `llava-lvis4v-lrv`)" in card  # training data from the run's spec.toml
    assert "Benchmarks" not in card  # no benchmark was run


def test_the_runs_benchmark_results_go_in_the_card(hub, tmp_path):
    import json

    run = _run_dir(tmp_path)
    (run / "evaluation" / "model").mkdir(parents=True)
    (run / "evaluation" / "model" / "results.json").write_text(json.dumps({"tasks": {"pope": {
        "headline": "accuracy", "metrics": {"accuracy": 0.875, "f1": 0.8}, "num_examples": 500,
        "seconds": 10.0, "examples_per_s": 50.0}}}))
    push_to_hub(run, "me/run-vlm", token=TOKEN)
    card = hub.files("me/run-vlm")["README.md"].decode()
    assert "Benchmarks (`prism eval`), the final model:" in card
    table = card.split("Benchmarks (`prism eval`), the final model:")[1].split("```text\n")[1].split("```")[0]
    assert [line.split() for line in table.strip().splitlines()] == [
        ["task", "metric", "value", "n", "q/s"], ["pope", "accuracy", "87.50", "500", "50.0"], ["f1", "80.00"]]


def test_without_matplotlib_the_card_shows_the_curves_the_run_drew(hub, tmp_path, monkeypatch):
    from PIL import Image

    run = _run_dir(tmp_path)
    Image.new("RGB", (40, 30), (31, 119, 180)).save(run / "curves.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    push_to_hub(run / "model", "me/run-vlm", token=TOKEN)  # the run's model/ finds its run too
    files = hub.files("me/run-vlm")
    assert files["curves.png"] == (run / "curves.png").read_bytes()
    assert "](curves.png)" in files["README.md"].decode()
    (run / "curves.png").unlink()  # no image and no matplotlib: no curves section, the rest as before
    push_to_hub(run, "me/run-vlm-2", token=TOKEN)
    assert "curves.png" not in hub.files("me/run-vlm-2") and "## Evaluation" in hub.files("me/run-vlm-2")[
        "README.md"].decode()


def test_a_broken_evaluation_report_stops_the_push_naming_the_file(hub, tmp_path):
    run = _run_dir(tmp_path)
    (run / "eval-train.json").write_text('{"split": "train"}')
    with pytest.raises(ValueError, match=r"eval-train\.json: not an evaluation report"):
        push_to_hub(run, "me/run-vlm", token=TOKEN)
    assert "me/run-vlm" not in hub.repos  # the card is written before anything reaches the Hub
