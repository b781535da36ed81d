"""``[train] validate_every`` and ``stop_when``: the data's validation split evaluated every N steps and logged next
to the loss; training stops at the first validation that meets every condition, and is then saved and exported as
at its planned end; conditions that cannot work are named before anything trains, or at the first validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from prism_core.plot import read_run
from prism_core.registry import use_registry
from prism_core.spec import SpecError, loads_spec
from prism_core.train.loop import train
from prism_core.train.trackers import read_metrics
from prism_core.train.validation import Condition
from tests.train.toy_run import registry, spec_toml

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


@pytest.fixture(autouse=True)
def toy_registry():
    with use_registry(registry()) as reg:
        yield reg


def _files(root: Path) -> Path:
    """A LLaVA chat file of 8 coloured squares, each asked its colour, with a question type per entry."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(8):
        colour = list(COLOURS)[i % 2]
        Image.new("RGB", (16, 16), COLOURS[colour]).save(root / f"{i}.png")
        entries.append({"image": f"{i}.png", "question_type": "colour" if i < 4 else "other",
                        "conversations": [{"from": "human", "value": "<image>\nwhat colour?"},
                                          {"from": "gpt", "value": colour}]})
    (root / "data.json").write_text(json.dumps(entries))
    return root / "data.json"


def _spec(tmp_path: Path, run_name: str, **train_fields):
    data = {"kind": "train-files", "annotations": str(_files(tmp_path / "data"))}
    table = {"per_device_batch_size": 2, "global_batch_size": 4, "max_steps": 6, **train_fields}
    return loads_spec(spec_toml(str(tmp_path), run_name=run_name, data=data, **table))


def _validations(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "validation/accuracy" in r]


def test_the_validation_split_is_logged_every_n_steps_with_accuracy_per_question_type(tmp_path):
    result = train(_spec(tmp_path, "every", validate_every=2))
    records = _validations(result.run_dir)
    assert [r["step"] for r in records] == [2, 4, 6] and result.step == 6
    assert set(records[0]) == {"step", "validation/accuracy", "validation/by_type/colour/accuracy",
                               "validation/by_type/other/accuracy"}
    assert all(0 <= v <= 1 for r in records for k, v in r.items() if k != "step")
    assert [r["step"] for r in read_metrics(result.run_dir) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    curves = read_run(result.run_dir)  # prism plot draws them in its evaluation panel
    assert set(curves.benchmarks) == {"validation", "validation/colour", "validation/other"}
    assert curves.benchmarks["validation"] == ([2, 4, 6], [r["validation/accuracy"] for r in records])


def test_stop_when_ends_training_at_the_first_validation_that_meets_it_then_exports(tmp_path, capsys):
    result = train(_spec(tmp_path, "stop", validate_every=2, stop_when=["validation/by_type/*/accuracy >= 0"]))
    assert result.step == 2 and result.total_steps == 6 and not result.interrupted
    assert result.export_dir is not None and (result.export_dir / "model.safetensors").is_file()
    assert [r["step"] for r in read_metrics(result.run_dir) if "loss" in r] == [1, 2]
    assert "step 2: validation meets train.stop_when (validation/by_type/*/accuracy >= 0)" in capsys.readouterr().err

    never = train(_spec(tmp_path, "never", validate_every=2, stop_when=["validation/accuracy > 1"]))
    assert never.step == 6 and [r["step"] for r in _validations(never.run_dir)] == [2, 4, 6]


def test_conditions_are_checked_with_the_spec_and_a_pattern_matching_nothing_at_the_first_validation(tmp_path):
    with pytest.raises(SpecError) as caught:
        _spec(tmp_path, "bad", stop_when=["validation/accuracy >= high", "loss < 0.1"])
    text = str(caught.value)
    assert "train.stop_when: is checked at each validation: set validate_every too" in text
    assert "train.stop_when[0]: expected 'METRIC OP NUMBER'" in text
    assert "train.stop_when[1]: 'loss < 0.1': conditions are checked on the validation metrics" in text

    with pytest.raises(SpecError, match=r"train\.stop_when\[1\]: 'validation/by_type/shape/accuracy >= 0\.9' "
                                        r"matches none of the validation metrics: validation/accuracy, "):
        train(_spec(tmp_path, "typo", validate_every=2,
                    stop_when=["validation/accuracy >= 0", "validation/by_type/shape/accuracy >= 0.9"]))


def test_a_data_set_that_cannot_be_validated_is_named_before_training(tmp_path):
    spec = loads_spec(spec_toml(str(tmp_path), run_name="toy", validate_every=2))  # train-toy: no records
    with pytest.raises(SpecError, match=r"train\.validate_every: ToyDataset has no conversation records"):
        train(spec)
    assert not list((tmp_path / "toy").glob("checkpoints/*"))


@pytest.mark.parametrize(("text", "metrics", "holds"), [
    ("validation/by_type/*/accuracy >= 0.9", {"validation/by_type/a/accuracy": 0.95,
                                              "validation/by_type/b/accuracy": 0.9}, True),
    ("validation/by_type/*/accuracy >= 0.9", {"validation/by_type/a/accuracy": 0.95,
                                              "validation/by_type/b/accuracy": 0.89}, False),
    ("validation/accuracy<0.5", {"validation/accuracy": 0.4, "validation/by_type/a/accuracy": 0.9}, True),
    ("validation/accuracy > 0.5", {"validation/accuracy": 0.5}, False),
])
def test_a_condition_holds_when_every_metric_its_pattern_matches_compares_true(text, metrics, holds):
    assert Condition.parse(text).holds(metrics) is holds
