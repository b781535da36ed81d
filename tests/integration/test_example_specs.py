"""The bundled quickstart and the example recipe specs validate against the installed plugins, and each example
tells the user the exact command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism_core.spec import dumps_spec, load_spec, loads_spec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "specs").glob("*.toml"))


def test_there_are_example_specs_for_the_original_recipes():
    names = {p.stem for p in EXAMPLES}
    assert {"llava-v15-align", "llava-v15-finetune", "one-stage-7b", "prism-dinosiglip-7b", "prism-dinosiglip-13b",
            "prism-dinosiglip-7b-fsdp-8gpu"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_spec_validates_and_names_its_torchrun_command(path):
    spec = load_spec(path)
    assert loads_spec(dumps_spec(spec)) == spec
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"torchrun --standalone --nproc-per-node 8 $(which prism-run) examples/specs/{path.name}" in line
               for line in header), f"{path.name}: the header must give the exact torchrun command"
    if spec.train.strategy is not None and spec.train.strategy.kind == "fsdp":
        assert spec.train.precision == "bf16"


def test_dinosiglip_examples_follow_the_paper_recipe():
    for name, llm in (("prism-dinosiglip-7b", "llama2-7b-pure"), ("prism-dinosiglip-13b", "llama2-13b-pure")):
        spec = load_spec(Path(EXAMPLES[0].parent, f"{name}.toml"))
        assert spec.model.vision.preset == "dinosiglip-vit-so-384px" and spec.model.vision.resize == "resize-naive"
        assert spec.model.llm.preset == llm and spec.model.projector.kind == "fused-gelu-mlp"
        assert spec.train.epochs == 2 and spec.data.preset == "llava-lvis4v-lrv"
        assert (spec.train.learning_rate, spec.train.global_batch_size, spec.train.weight_decay) == (2e-5, 128, 0.1)


def test_llava_lora_example_follows_llavas_lora_recipe():
    spec = load_spec(Path(EXAMPLES[0].parent, "llava-v15-lora.toml"))
    adapter = spec.train.adapter
    assert (adapter.kind, adapter.r, adapter.alpha, adapter.dropout) == ("lora", 128, 256, 0.05)
    assert adapter.target == ("llm.*",) and adapter.exclude == ("*lm_head*",)
    assert adapter.fully_trained == ("projector.*",) and adapter.fully_trained_learning_rate == 2e-5
    assert (spec.train.learning_rate, spec.train.global_batch_size, spec.train.weight_decay) == (2e-4, 128, 0.0)
    assert spec.train.epochs == 1 and spec.train.warmup_ratio == 0.03 and spec.train.trainable is None
    assert spec.model.llm.preset == "vicuna-v15-7b" and spec.model.init_from == "runs/llava-v15-align/model"


def test_quickstart_is_the_default_named_spec_and_composes_real_plugins():
    spec = load_spec("quickstart")
    assert (spec.model.vision.kind, spec.model.llm.kind, spec.data.kind) == ("siglip", "llama2", "synthetic-shapes")
    assert spec.train.stage == "full-finetune" and spec.train.strategy.kind == "single"
    assert spec.model.vision.weights == "random" and spec.model.llm.weights == "random"
    assert spec.eval is not None and spec.eval.split == "test"
