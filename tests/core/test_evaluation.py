"""The evaluation runner: tasks from names, tables and overrides; fixed subsets; each rank's share gathered into
the single-process answer; files and tables; the eval-task role in specs and `prism eval`."""

from __future__ import annotations

import json

import pytest
import torch

import prism_core
from prism_core.data import DataError
from prism_core.evaluation import build_tasks, eval_mode, flat_metrics, format_summary, run_task, select
from prism_core.registry import use_registry
from prism_core.spec import SpecError, dumps_spec, loads_spec
from prism_core.testing.fakes import fake_registry
from prism_core.types import EvalExample
from tests.train.eval_toy import registry as eval_registry

MODEL = '[model]\nvision = {kind = "fake-vit"}\nllm = {kind = "fake-llama"}\nprojector = {kind = "fake-mlp"}\n'


@pytest.fixture
def registry():
    with use_registry(eval_registry()) as reg:
        yield reg


@pytest.fixture(scope="module")
def vlm():
    with use_registry(fake_registry()):
        torch.manual_seed(0)
        return prism_core.compose(vision="fake-vit-tiny", projector="fake-mlp", llm="fake-llama-tiny",
                                  prompt_format="fake-pure")


class ListTask:
    """Answers each example with its own id (and the batch it came in): enough to see what the runner did."""

    name, headline = "listed", "count"

    def __init__(self, ids, image=None):
        self._examples = [EvalExample(i, image, {}, f"listed#{n}") for n, i in enumerate(ids)]
        self.batches = []

    def examples(self):
        return self._examples

    def predict(self, vlm, examples, pixel_values):
        self.batches.append([e.id for e in examples])
        return [{"id": e.id} for e in examples]

    def score(self, records):
        return {"count": len(records), "order": [r["id"] for r in records]}


class NoModel:
    image_transform = staticmethod(lambda image: image.size)


def test_eval_tasks_are_a_role_in_run_specs(registry, tmp_path):
    text = f'schema = 1\n{MODEL}[eval]\nroot = "/data"\nevery = 100\nlimit = 50\n[[eval.tasks]]\nkind = "toy-eval"\n' \
           '[[eval.tasks]]\nkind = "toy-eval"\nnum_examples = 3\n'
    with pytest.raises(SpecError, match=r"eval\.tasks: kind 'toy-eval' is listed more than once"):
        loads_spec(text)
    spec = loads_spec(text.rsplit("[[eval.tasks]]", 1)[0])
    assert [t.kind for t in spec.eval.tasks] == ["toy-eval"] and spec.eval.every == 100
    assert loads_spec(dumps_spec(spec)).eval == spec.eval and not spec.eval.held_out
    with pytest.raises(SpecError, match=r"eval\.tasks\[0\]: unknown evaluation task kind 'toy-eva' .*did you "
                                        r"mean 'toy-eval'"):
        loads_spec(f'schema = 1\n{MODEL}[eval]\n[[eval.tasks]]\nkind = "toy-eva"\n')
    with pytest.raises(SpecError, match=r"eval\.every: must be >= 1, got 0"):
        loads_spec(f'schema = 1\n{MODEL}[eval]\nevery = 0\n[[eval.tasks]]\nkind = "toy-eval"\n')
    with pytest.raises(SpecError, match=r"eval\.every: evaluates eval\.tasks during training, but .* is empty"):
        loads_spec(f"schema = 1\n{MODEL}[eval]\nevery = 5\n")


def test_tasks_from_names_tables_and_overrides(registry, tmp_path):
    [task] = build_tasks("toy-eval", root=tmp_path, overrides=["toy-eval.num_examples=4"])
    assert len(task.examples()) == 4 and task.examples()[0].image.startswith(str(tmp_path))
    [task] = build_tasks([{"kind": "toy-eval", "num_examples": 2}], root=tmp_path)
    assert len(task.examples()) == 2
    with pytest.raises(SpecError, match=r"tasks\[0\]\.num_examples: expected int, got str 'x'"):
        build_tasks("toy-eval", overrides=["toy-eval.num_examples='x'"])
    with pytest.raises(SpecError, match=r"must be KIND\.FIELD=VALUE for a task being evaluated \(tasks: toy-eval\)"):
        build_tasks("toy-eval", overrides=["pope.splits=[]"])
    with pytest.raises(SpecError, match="listed more than once"):
        build_tasks([ListTask(["a"]), ListTask(["b"])])
    with pytest.raises(SpecError, match="no task given"):
        build_tasks("")


def test_limit_is_a_fixed_subset_in_file_order():
    picked = select(list(range(100)), 10)
    assert picked == sorted(picked) and len(set(picked)) == 10 and picked == select(list(range(100)), 10)
    assert select(list(range(5)), 10) == [0, 1, 2, 3, 4]


def test_ranks_answer_disjoint_shares_gathered_into_the_single_process_result():
    ids = [f"e{i}" for i in range(7)]
    single = run_task(NoModel(), ListTask(ids), batch_size=2, progress=False)
    shares = []
    for rank in (0, 1):
        task = ListTask(ids)
        shares.append(task)
        result = run_task(NoModel(), task, batch_size=2, progress=False, rank=rank, world_size=2,
                          gather=lambda records, rank=rank: records if rank else [*records, *([{"id": i} for i in
                                                                                              ids[1::2]])])
        assert (result is None) == (rank == 1)
        if rank == 0:
            assert result.metrics == single.metrics == {"count": 7, "order": ids}
    assert [i for batch in shares[0].batches for i in batch] == ids[0::2]
    assert [i for batch in shares[1].batches for i in batch] == ids[1::2]
    assert max(len(b) for b in shares[0].batches) == 2


def test_bad_examples_and_predictions_are_refused_naming_them(tmp_path):
    with pytest.raises(DataError, match=r"listed: example id 'a' appears twice \(listed#0 and listed#2\)"):
        run_task(NoModel(), ListTask(["a", "b", "a"]), progress=False)
    with pytest.raises(DataError, match=rf"listed: listed#0: {tmp_path / 'gone.png'}: missing image file"):
        run_task(NoModel(), ListTask(["a"], image=str(tmp_path / "gone.png")), progress=False)

    class Wrong(ListTask):
        def predict(self, vlm, examples, pixel_values):
            return [{"id": "x"} for _ in examples]

    with pytest.raises(RuntimeError, match="one record per example, in order"):
        run_task(NoModel(), Wrong(["a"]), progress=False)


def test_evaluation_leaves_each_module_in_the_mode_it_was(vlm):
    vlm.train()
    vlm.vision_backbone.eval()
    with eval_mode(vlm):
        assert not any(m.training for m in vlm.modules())
    assert not vlm.vision_backbone.training and vlm.llm_backbone.training
    vlm.eval()


def test_a_real_model_end_to_end_with_files_a_table_and_tracker_numbers(vlm, registry, tmp_path):
    report = prism_core.evaluate(vlm, "toy-eval", root=tmp_path, batch_size=4, out_dir=tmp_path / "out",
                                 progress=False)
    summary = report["tasks"]["toy-eval"]
    records = [json.loads(line) for line in (tmp_path / "out/predictions-toy-eval.jsonl").read_text().splitlines()]
    assert len(records) == summary["num_examples"] == 10
    assert json.loads((tmp_path / "out/results.json").read_text()) == json.loads(json.dumps(report))
    accuracy = sum(r["prediction"] == r["label"] for r in records) / 10
    assert summary["metrics"]["accuracy"] == pytest.approx(accuracy)
    table = format_summary(report).splitlines()
    assert table[0].split() == ["task", "metric", "value", "n", "q/s"]
    assert table[1].split()[:4] == ["toy-eval", "accuracy", f"{100 * accuracy:.2f}", "10"]
    flat = flat_metrics(report)
    assert flat["eval/toy-eval/accuracy"] == pytest.approx(accuracy) and "eval/toy-eval/by_label/yes" in flat


def test_prism_eval_runs_a_runs_own_eval_tasks(registry, tmp_path, capsys):
    from prism_core.cli.main import main
    from prism_core.train.loop import train
    from tests.train.toy_run import spec_toml

    text = spec_toml(str(tmp_path), run_name="run", max_steps=2) + \
        f'\n[eval]\nroot = "{tmp_path / "data"}"\nat_end = false\n[[eval.tasks]]\nkind = "toy-eval"\n'
    result = train(loads_spec(text))
    assert main(["eval", str(result.run_dir), "--quiet", "--workers", "0", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("toy-eval  accuracy")
    report = json.loads((result.run_dir / "evaluation/model/results.json").read_text())
    assert report["tasks"]["toy-eval"]["num_examples"] == 5 and report["model"] == str(result.run_dir)
