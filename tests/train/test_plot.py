"""``prism plot``: real toy runs drawn as PNG and HTML, several overlaid; clear errors for what cannot be drawn."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from prism_core.cli.main import main
from prism_core.spec import loads_spec
from tests.train.toy_run import spec_toml

C0 = (31, 119, 180)  # matplotlib's first line colour: the first run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from prism_core.registry import use_registry
    from prism_core.train.loop import train
    from tests.train.toy_run import registry

    out = tmp_path_factory.mktemp("runs")
    with use_registry(registry()):
        return [train(loads_spec(spec_toml(str(out), run_name=name, learning_rate=lr, max_steps=8))).run_dir
                for name, lr in (("slow", 3e-3), ("fast", 1e-2))]


def colour_pixels(image, colour, box=None):
    region = image.crop(box) if box else image
    return sum(count for count, rgb in region.getcolors(maxcolors=1 << 20) if rgb[:3] == colour)


def test_a_run_is_drawn_into_its_directory_as_a_png(two_runs, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    run = two_runs[0]
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'curves.png'}"
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1100, 750)
        image = image.convert("RGB")
        background = sum(count for count, rgb in image.getcolors(maxcolors=1 << 20) if rgb == (255, 255, 255))
        assert background < 0.97 * 1100 * 750  # axes, text and curves, not a blank canvas
        assert colour_pixels(image, C0, (0, 0, 550, 375)) > 100  # the loss curve, top left


def test_several_runs_overlay_in_an_html_page(two_runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "both.html"
    (two_runs[1] / "eval.json").write_text(json.dumps(
        {"split": "test", "with_image": {"accuracy": 0.75, "num_examples": 8}, "blind": {"accuracy": 0.25}}))
    assert main(["plot", *map(str, two_runs), "-o", str(out), "--title", "two learning rates"]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "two learning rates" in page
    assert "<td>slow</td><td>8</td>" in page and "<td>fast</td><td>8</td>" in page
    assert "test: 75.0% (blind 25.0%)" in page  # the held-out accuracy of the run that has one


def test_what_cannot_be_drawn_is_named(two_runs, tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert f"{tmp_path / 'metrics.jsonl'}: no such file" in capsys.readouterr().err
    assert main(["plot", str(two_runs[0]), "-o", str(tmp_path / "curves.jpg")]) == 2
    assert "choose a .png, .svg or .html file" in capsys.readouterr().err


def test_without_matplotlib_it_says_how_to_install_it(two_runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["plot", str(two_runs[0]), "-o", str(two_runs[0] / "x.png")]) == 1
    assert "pip install 'prism-core[plot]'" in capsys.readouterr().err
    from prism_core.plot import plot_into_run_dir

    assert plot_into_run_dir(two_runs[0]) == (f"to see the curves: pip install 'prism-core[plot]', "
                                              f"then prism plot {two_runs[0]}")


def test_benchmarks_evaluated_during_training_are_curves_of_their_headline_metric(two_runs, tmp_path):
    import shutil

    from prism_core.plot import read_run

    run = shutil.copytree(two_runs[0], tmp_path / "benchmarked")
    with open(run / "metrics.jsonl", "a") as metrics:  # what [eval] every=4 logs: each task's metrics, flattened
        for step, accuracy in ((4, 0.55), (8, 0.7)):
            metrics.write(json.dumps({"step": step, "eval/pope/accuracy": accuracy, "eval/pope/f1": 0.5,
                                      "eval/pope/adversarial/f1": 0.4}) + "\n")
    (run / "evaluation" / "model").mkdir(parents=True)
    (run / "evaluation" / "model" / "results.json").write_text(json.dumps(
        {"tasks": {"pope": {"headline": "accuracy", "metrics": {"accuracy": 0.7}, "num_examples": 9}}}))
    curves = read_run(run)
    assert curves.benchmarks == {"pope/accuracy": ([4, 8], [0.55, 0.7])}
    assert curves.series["loss"][0] == list(range(1, 9))  # the evaluation rows add no training points
    if importlib.util.find_spec("matplotlib"):
        assert main(["plot", str(run)]) == 0
