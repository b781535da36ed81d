"""Every released model's training recipe validates against the installed plugins, and `prism spec fill` prints it."""

from __future__ import annotations

import pytest
import tomllib
from prism_plugin_prismatic.catalog import MODELS
from prism_plugin_prismatic.recipes import recipe_names, recipe_toml

from prism_core.cli.main import main
from prism_core.spec import load_spec

NAMES = recipe_names()


def test_there_is_one_recipe_per_model_plus_the_three_align_stages():
    assert len(NAMES) == 52 and sum(n.endswith("@align") for n in NAMES) == 3
    assert {n.removesuffix("@align") for n in NAMES} == set(MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_validates_with_the_installed_plugins(name):
    run = load_spec(name)  # raises SpecError listing every problem
    config = MODELS[name.removesuffix("@align")]["config"]
    stage = "align" if name.endswith("@align") else config["stage"]
    assert run.train.stage == stage and run.train.strategy.kind == "fsdp"
    assert run.train.strategy.sharding == ("shard-grad-op" if stage == "align" else "full-shard")
    assert run.model.vision.preset == config["vision_backbone_id"]
    assert run.model.vision.resize == config["image_resize_strategy"]
    assert run.model.llm.preset == config["llm_backbone_id"] and run.model.llm.max_length == 2048
    assert run.data.preset == config["dataset"]
    assert "stage" not in tomllib.loads(recipe_toml(name))["data"]  # said once, in train.stage
    components = run.data.components(run.train.stage)
    assert components
    if stage == "align":
        assert [c.annotations for c in components] == ["download/llava-laion-cc-sbu-558k/chat.json"]


def test_spec_fill_prints_the_full_training_spec(capsys):
    assert main(["spec", "fill", "prism-dinosiglip+7b"]) == 0
    spec = tomllib.loads(capsys.readouterr().out)
    vision = spec["model"]["vision"]
    assert vision["kind"] == "fused" and vision["resize"] == "resize-naive"
    assert [m["preset"] for m in vision["members"]] == ["dinov2-vit-l", "siglip-vit-so400m-384px"]
    assert all(m["image_size"] == 384 for m in vision["members"])
    assert spec["model"]["llm"]["model_id"] == "meta-llama/Llama-2-7b-hf"
    assert spec["model"]["projector"]["kind"] == "fused-gelu-mlp"
    assert [c["annotations"].rsplit("/", 1)[1] for c in spec["data"]["finetune"]] == [
        "llava_v1_5_mix665k.json", "lvis_instruct4v_220k.json", "lrv_instruct_342k.json"]
    train = spec["train"]
    assert (train["epochs"], train["global_batch_size"], train["learning_rate"], train["weight_decay"]) == (
        2, 128, 2e-5, 0.1)
    assert train["lr_schedule"] == "linear-warmup+cosine-decay" and train["warmup_ratio"] == 0.03
    assert train["strategy"] == {**train["strategy"], "kind": "fsdp", "sharding": "full-shard"}
