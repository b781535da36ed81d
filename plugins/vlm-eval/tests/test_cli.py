"""``prism eval MODEL --task ... --root DATA`` end to end on every benchmark's fixture, with a real (tiny, random)
saved model: a summary table, results.json and one predictions file per task; exit 2 for the user's mistakes."""

from __future__ import annotations

import json

import pytest
from prism_plugin_vlm_eval.spec import SPECS

from prism_core.cli.main import main
from prism_core.registry import use_registry
from prism_core.testing.fakes import fake_registry

KINDS = [spec.kind for spec in SPECS]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    import torch

    from prism_core import compose, save

    with use_registry(fake_registry(extra=SPECS)):
        torch.manual_seed(0)
        vlm = compose(vision="fake-vit-tiny", projector="fake-mlp", llm="fake-llama-tiny", prompt_format="fake-pure")
        return save(vlm, tmp_path_factory.mktemp("model") / "model")


@pytest.fixture
def registry():
    with use_registry(fake_registry(extra=SPECS)) as reg:
        yield reg


def test_every_task_end_to_end_through_prism_eval(saved_model, data_root, tmp_path, registry, capsys):
    out = tmp_path / "out"
    short = [arg for spec in SPECS if hasattr(spec(), "max_new_tokens")
             for arg in ("--set", f"{spec.kind}.max_new_tokens=6")]  # a random model never stops early
    code = main(["eval", str(saved_model), "--task", ",".join(KINDS), "--root", str(data_root), "--out", str(out),
                 "--workers", "0", "--batch-size", "3", "--quiet", *short,
                 "--set", "pope.splits=['random', 'popular']"])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    assert list(report["tasks"]) == KINDS
    assert report["tasks"]["pope"]["num_examples"] == 4  # the --set kept two splits
    for kind, summary in report["tasks"].items():
        lines = (out / f"predictions-{kind}.jsonl").read_text().splitlines()
        assert len(lines) == summary["num_examples"] > 0
        assert summary["headline"] in summary["metrics"]
        assert any(line.startswith(f"{kind} ") and summary["headline"] in line for line in printed.splitlines())
    assert f"wrote {out / 'results.json'}" in printed


def test_user_mistakes_exit_2_naming_the_problem(saved_model, data_root, tmp_path, registry, capsys):
    assert main(["eval", str(saved_model), "--task", "pope", "--quiet"]) == 2
    assert "pope: no data root" in capsys.readouterr().err
    assert main(["eval", str(saved_model), "--task", "popе", "--root", str(data_root), "--quiet"]) == 2
    assert "unknown evaluation task kind 'popе'" in capsys.readouterr().err
    assert main(["eval", str(saved_model), "--root", str(data_root)]) == 2
    assert "not a run directory: name the tasks with --task" in capsys.readouterr().err
    assert main(["eval", str(saved_model), "--task", "pope", "--set", "gqa.images=x", "--root", str(data_root)]) == 2
    assert "must be KIND.FIELD=VALUE for a task being evaluated (tasks: pope)" in capsys.readouterr().err
    assert main(["eval", str(saved_model), "--task", "pope", "--limit", "0", "--root", str(data_root)]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err
