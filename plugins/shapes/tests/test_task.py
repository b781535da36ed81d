"""The shapes evaluation as an evaluation task: exact match with the blind control, through `prism eval --task`
and `prism_core.evaluate`, reported like the held-out evaluation."""

from __future__ import annotations

import json

import attrs
import pytest
from prism_plugin_shapes.spec import ShapesSpec
from prism_plugin_shapes.task import ShapesTaskSpec

import prism_core
from prism_core.cli.main import main
from prism_core.prompting import PromptBuilder
from prism_core.registry import use_registry
from prism_core.spec import SpecError, loads_spec
from prism_core.testing.conformance import EvalTaskConformance
from prism_core.testing.fakes import FakePureFormat, fake_registry


def tiny(tmp_path) -> dict:
    return {"kind": "synthetic-shapes", "data": {"kind": "synthetic-shapes", "preset": "shapes-tiny",
                                                 "cache_dir": str(tmp_path / "shapes")}}


class TestShapesTaskConformance(EvalTaskConformance):
    spec = ShapesTaskSpec(data=ShapesSpec.from_preset("shapes-tiny"))

    @pytest.fixture
    def task(self, tmp_path):
        return attrs.evolve(self.spec, data=attrs.evolve(self.spec.data, cache_dir=str(tmp_path))).build()


def pixels(image):
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32))


class Oracle:
    """Answers each (prompt, image) from the split's reference answers, and nothing for a zeroed image."""

    def __init__(self, answers: dict[tuple[str, bytes], str]) -> None:
        self.prompt_format = FakePureFormat()
        self.answers = answers

    image_transform = staticmethod(pixels)

    def get_prompt_builder(self, system_prompt=None):
        return PromptBuilder(self.prompt_format)

    def generate_batch(self, pixels, texts, return_string_probabilities=None, **kwargs):
        blind = all(float(p.sum()) == 0 for p in pixels)
        if return_string_probabilities is not None:
            return [[1.0] + [0.0] * (len(return_string_probabilities) - 1) for _ in texts]
        return ["" if blind else self.answers[t, p.numpy().tobytes()] for t, p in zip(texts, pixels, strict=True)]


def test_the_task_reports_what_the_held_out_evaluation_reports(tmp_path):
    task = ShapesTaskSpec(data=ShapesSpec.from_preset("shapes-tiny", cache_dir=str(tmp_path))).build()
    from PIL import Image

    fmt = FakePureFormat()
    answers = {(fmt.prompt(r.turns[:-1]), pixels(Image.open(r.image)).numpy().tobytes()): r.turns[-1].message
               for r in task.records}
    report = prism_core.evaluate(Oracle(answers), [task], batch_size=8, progress=False, out_dir=tmp_path / "out")
    metrics = report["tasks"]["synthetic-shapes"]["metrics"]
    assert metrics["accuracy"] == 1.0 and metrics["with_image"]["num_examples"] == 32
    assert set(metrics["with_image"]["by_type"]) == {"colour", "shape", "presence"}
    assert metrics["blind_generation"]["accuracy"] == 0.0
    assert metrics["chance"]["presence"] == 0.5 and len(metrics["samples"]) == 12
    records = [json.loads(line) for line in (tmp_path / "out/predictions-synthetic-shapes.jsonl").read_text()
               .splitlines()]
    assert len(records) == 32 and {"question", "answer", "output", "blind", "blind_generation"} <= set(records[0])


def test_prism_eval_runs_the_shapes_task_on_a_saved_model(tmp_path, capsys):
    import torch

    from prism_core import compose, save

    with use_registry(fake_registry(extra=(ShapesSpec, ShapesTaskSpec))):
        torch.manual_seed(0)
        model = save(compose(vision="fake-vit-tiny", projector="fake-mlp", llm="fake-llama-tiny",
                             prompt_format="fake-pure"), tmp_path / "model")
        data = f'{{kind = "synthetic-shapes", preset = "shapes-tiny", cache_dir = "{tmp_path / "shapes"}"}}'
        code = main(["eval", str(model), "--task", "synthetic-shapes", "--out", str(tmp_path / "out"), "--quiet",
                     "--workers", "0", "--set", f"synthetic-shapes.data={data}",
                     "--set", "synthetic-shapes.max_new_tokens=2"])
    assert code == 0
    assert "synthetic-shapes  accuracy" in capsys.readouterr().out
    report = json.loads((tmp_path / "out/results.json").read_text())
    assert report["tasks"]["synthetic-shapes"]["num_examples"] == 32


def test_the_task_goes_in_eval_tasks_from_its_preset_and_bad_fields_are_named(tmp_path):
    with use_registry(fake_registry(extra=(ShapesSpec, ShapesTaskSpec))):
        spec = loads_spec("""schema = 1
[model]
vision = {kind = "fake-vit"}
llm = {kind = "fake-llama"}
projector = {kind = "fake-mlp"}
[[eval.tasks]]
kind = "synthetic-shapes"
preset = "shapes-quickstart"
""")
        [task] = spec.eval.tasks
        assert task.data.image_size == 40 and task.data.num_test == 600 and task.max_new_tokens == 3
        with pytest.raises(SpecError, match=r"tasks\[0\]\.split: synthetic-shapes has splits 'train' and 'test'"):
            prism_core.evaluate(Oracle({}), [{**tiny(tmp_path), "split": "val"}], progress=False)
