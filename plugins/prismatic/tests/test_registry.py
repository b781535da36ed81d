"""The released-model registry (prism_core.models) and the recipes served as named specs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from prism_plugin_prismatic import recipes
from prism_plugin_prismatic.catalog import MODELS

import prism_core
from prism_core.registry import get_registry

PLUGIN_DIR = Path(__file__).resolve().parents[1]


def test_registry_lists_all_49_released_models_through_the_entry_point():
    ids = prism_core.available_models()
    assert len(ids) == 49 == len(set(ids))
    assert ids[0] == "reproduction-llava-v15+7b" and "prism-dinosiglip+7b" in ids
    names = prism_core.available_model_names()
    assert names[2][:2] == ["one-stage+7b", "One-Stage 7B"] and "Base" in names[2]


def test_description_by_id_and_by_paper_name_and_siglip_13b_id_bug_fixed():
    by_name = prism_core.get_model_description("Prism-DINOSigLIP 13B (Controlled)")
    assert by_name == prism_core.get_model_description("prism-dinosiglip-controlled+13b")
    assert by_name["language_model"] == "Llama-2 13B" and by_name["image_processing"] == "Naive Resize"
    assert prism_core.get_model_description("prism-dinosiglip+7b")["datasets"] == [
        "LLaVa v1.5 Instruct", "LVIS-Instruct-4V", "LRV-Instruct"]
    assert prism_core.get_model_description("1.25 Epochs")["train_epochs"] == 1.25
    assert MODELS["prism-siglip-controlled+13b"]["model_id"] == "prism-siglip-controlled+13b"
    # the returned description is a copy: mutating it does not change the registry
    by_name["name"] = "x"
    assert prism_core.get_model_description("prism-dinosiglip-controlled+13b")["name"] != "x"


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"did you mean 'prism-dinosiglip\+7b'"):
        prism_core.get_model_description("prism-dinosiglip+7")


def test_pyproject_entry_points_match_the_catalog():
    pyproject = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["prism.specs"]
    assert list(declared) == recipes.recipe_names() == sorted(declared)
    assert all(v == f"prism_plugin_prismatic.recipes:{recipes.attribute_name(k)}" for k, v in declared.items())
    assert set(get_registry().spec_names()) >= set(declared)


@pytest.mark.parametrize("model_id", ["prism-dinosiglip+7b", "reproduction-llava-v15+13b", "train-1.5-epochs+7b",
                                      "full-ft-one-stage+7b", "phi-2+3b"])
def test_recipe_text_carries_the_original_training_setup(model_id):
    spec = tomllib.loads(get_registry().spec_text(model_id))
    config = MODELS[model_id]["config"]
    assert spec["model"]["vision"]["preset"] == config["vision_backbone_id"]
    assert spec["model"]["llm"]["preset"] == config["llm_backbone_id"]
    assert spec["data"]["preset"] == config["dataset"]
    assert spec["train"]["stage"] == config["stage"] and spec["train"]["epochs"] == config["epochs"]
    assert spec["train"]["strategy"]["kind"] == "fsdp"
    assert spec["train"].get("max_steps") == config["max_steps"]


def test_two_stage_models_have_an_align_recipe_and_warm_start_from_it():
    align = tomllib.loads(get_registry().spec_text("reproduction-llava-v15+7b@align"))
    final = tomllib.loads(get_registry().spec_text("reproduction-llava-v15+7b"))
    assert align["train"]["stage"] == "align" and align["train"]["learning_rate"] == 1e-3
    assert align["train"]["global_batch_size"] == 256 and align["train"]["weight_decay"] == 0.0
    assert final["model"]["init_from"].endswith("reproduction-llava-v15+7b@align")
    assert final["train"]["learning_rate"] == 2e-5 and final["model"]["projector"]["kind"] == "gelu-mlp"
    with pytest.raises(ValueError, match="single-stage"):
        recipes.recipe("prism-dinosiglip+7b", "align")


def test_modules_stay_torch_free():
    code = ("import sys, prism_core; import prism_plugin_prismatic.source, prism_plugin_prismatic.hooks, "
            "prism_plugin_prismatic.recipes; prism_core.available_models(); "
            "prism_plugin_prismatic.recipes.recipe_toml('prism-clip+7b'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
