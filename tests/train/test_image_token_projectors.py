"""The projectors that change the number of image tokens, end to end on the core fakes: train, checkpoint, resume
bit for bit, export, load and generate."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from prism_core.registry import use_registry
from prism_core.spec import loads_spec
from prism_core.train import checkpoint as ckpt
from prism_core.train.loop import train
from prism_core.train.trackers import read_metrics
from tests.train.toy_run import registry, spec_toml

projectors = pytest.importorskip("prism_plugin_projectors.spec")

#: fake-vit makes a 4×4 grid of 16 patches.
KINDS = {"pixel-shuffle-mlp": ({"kind": "pixel-shuffle-mlp"}, 4),
         "pool-mlp": ({"kind": "pool-mlp"}, 4),
         "resampler": ({"kind": "resampler", "num_queries": 3, "num_heads": 4, "depth": 1}, 3)}


@pytest.fixture
def kinds_registry():
    reg = registry()
    for spec_class in (projectors.PixelShuffleMLPProjectorSpec, projectors.PoolMLPProjectorSpec,
                       projectors.ResamplerProjectorSpec):
        reg.register(spec_class, distribution="prism-plugin-projectors")
    with use_registry(reg):
        yield reg


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_train_resume_save_load_and_generate(tmp_path, kinds_registry, kind):
    table, tokens = KINDS[kind]
    model = {"vision": {"kind": "fake-vit"}, "llm": {"kind": "fake-llama"}, "projector": table}
    spec = loads_spec(spec_toml(str(tmp_path), run_name=kind, model=model, max_steps=4, save_every=2))
    first = train(spec)
    assert first.step == 4
    records = read_metrics(first.run_dir)
    assert records[-1]["loss"] < records[0]["loss"]
    last = ckpt.latest_checkpoint(first.run_dir)
    trained = load_file(str(last / "model.safetensors"))
    assert any(k.startswith("projector.") for k in trained)

    # Lose the last checkpoint and resume from step 2: steps 3 and 4 come out the same, bit for bit.
    shutil.rmtree(last)
    resumed = train(spec, resume_dir=first.run_dir)
    assert resumed.step == 4
    again = load_file(str(ckpt.latest_checkpoint(first.run_dir) / "model.safetensors"))
    assert again.keys() == trained.keys() and all(torch.equal(again[k], v) for k, v in trained.items())

    from prism_core.io import load

    vlm = load(resumed.export_dir)
    assert vlm.spec.projector.kind == kind and vlm.num_image_tokens == tokens
    state = vlm.state_dict()
    assert all(torch.equal(state[k].float(), v.float()) for k, v in trained.items() if k.startswith("projector."))
    from PIL import Image

    picture = Image.new("RGB", (16, 16), (200, 30, 30))
    scores = vlm.score(picture, "In: What colour?\nOut:", ["red", "blue"])
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert isinstance(vlm.generate(picture, "In: What colour?\nOut:", do_sample=False, max_new_tokens=4), str)
