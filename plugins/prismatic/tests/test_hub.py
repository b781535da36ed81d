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
