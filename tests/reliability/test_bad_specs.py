"""Malformed specs: every one exits 2 with its dotted path and a message a user can act on, never a traceback,
and nothing is built or written (no run directory)."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import prism_run, run_worker, write_spec
from tests.train.toy_run import spec_toml

# (override, dotted path, message fragment): one bad value each, applied to a valid toy spec.
BAD_VALUES = [
    ("train.per_device_batch_size=0", "train.per_device_batch_size", "must be >= 1, got 0"),
    ("train.global_batch_size=0", "train.global_batch_size", "must be >= 1, got 0"),
    ("train.epochs=0", "train.epochs", "must be >= 1"),
    ("train.max_steps=0", "train.max_steps", "must be >= 1"),
    ("train.save_every=0", "train.save_every", "must be >= 1"),
    ("train.keep_last=0", "train.keep_last", "must be >= 1"),
    ("train.log_every=-3", "train.log_every", "must be >= 1"),
    ("train.max_length=0", "train.max_length", "must be >= 1"),
    ("train.num_workers=-1", "train.num_workers", "must be >= 0"),
    ("train.learning_rate=0", "train.learning_rate", "must be > 0"),
    ("train.learning_rate=inf", "train.learning_rate", "must be finite"),
    ("train.learning_rate=nan", "train.learning_rate", "expected a number, got nan"),
    ("train.weight_decay=-0.1", "train.weight_decay", "must be >= 0"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio", "must be in [0, 1)"),
    ("train.max_grad_norm=0", "train.max_grad_norm", "must be > 0"),
    ("train.peak_tflops=-1", "train.peak_tflops", "must be > 0"),
    ("train.seed=-1", "train.seed", "must be in [0, 2**63 - 1]"),
    ("train.seed=9223372036854775808", "train.seed", "must be in [0, 2**63 - 1]"),
    ("model.seed=-5", "model.seed", "must be in [0, 2**63 - 1]"),
    ("eval.batch_size=0", "eval.batch_size", "must be >= 1"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens", "must be >= 1"),
    ("eval.max_examples=0", "eval.max_examples", "must be >= 1"),
    ("train.stage=[]", "train.stage", "expected one of 'align', 'finetune', 'full-finetune'"),
    ("train.stage='alignn'", "train.stage", "expected one of"),
    ("train.precision=16", "train.precision", "expected one of"),
    ("train.epochs=1.5", "train.epochs", "expected int, got float 1.5"),
    ("train.activation_checkpointing='no'", "train.activation_checkpointing", "expected bool"),
    ("train.lr=0.1", "train.lr", "did you mean 'learning_rate'?"),
    ("train.wd=0.1", "train.wd", "did you mean 'weight_decay'?"),
    ("train.epoks=2", "train.epoks", "did you mean 'epochs'?"),
    ("trian.epochs=2", "trian", "did you mean 'train'?"),
    ("model=5", "model", "expected a table, got int 5"),
    ("train=5", "train", "expected a table, got int 5"),
    ("eval=[1, 2]", "eval", "expected a table, got list"),
    ("model.vision=5", "model.vision", "expected a table with a 'kind', got int 5"),
    ("model.vision.kind='nope'", "model.vision", "nope"),
    ("model.vision.patch_size='4'", "model.vision.patch_size", "expected int, got str '4'"),
    ("data.kind=3", "data", "'kind' must be a string"),
    ("train.trackers=['jsonl', 3]", "train.trackers[1]", "expected str"),
]


@pytest.mark.parametrize(("override", "path", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_bad_value_exits_2_naming_its_dotted_path(tmp_path, toy_registry, capsys, override, path, message):
    spec = write_spec(tmp_path)
    run = prism_run(capsys, str(spec), override).expect(2, f"  {path}: ", message)
    assert len(run.err) < 600, run
    assert not (tmp_path / "toy").exists()


def _nested_arrays(depth: int) -> str:
    return f"schema = 1\nx = {'[' * depth}{']' * depth}\n"


def _nested_inline_tables(depth: int) -> str:
    return f"schema = 1\nx = {'{ a = ' * depth}1{' }' * depth}\n"


BAD_FILES = [
    ("non-utf8", b"schema = 1\n# caf\xe9\n", "not UTF-8 text: byte 0xe9 at line 2, column 6"),
    ("nested-arrays", _nested_arrays(2000).encode(), "nested too deeply"),
    ("nested-inline-tables", _nested_inline_tables(2000).encode(), "nested too deeply"),
    ("nested-arrays-parseable", _nested_arrays(100).encode(), "x[0][0][0]"),
    ("nested-tables", (spec_toml("/tmp") + "\n[train.a" + ".a" * 3000 + "]\nb = 1\n").encode(),
     "nested more than 32 levels deep"),
    ("invalid-toml", b"schema = 1\n[train\n", "invalid TOML"),
    ("no-schema", b"[model]\n", "schema: required field missing"),
    ("future-schema", b"schema = 99\n", "upgrade prism-core"),
    ("deep-value", (spec_toml("/tmp") + "\n[eval.batch_size" + ".a" * 20 + "]\nb = 1\n").encode(),
     "eval.batch_size: expected int, got dict {'a': {'a': {'a'"),
    ("huge-string", (spec_toml("/tmp").replace("learning_rate = 0.003", f"learning_rate = '{'9' * 100_000}'"))
     .encode(), "train.learning_rate: expected float, got str '9999"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_exits_2_with_a_short_message(tmp_path, toy_registry, capsys, name, content, message):
    spec = tmp_path / f"{name}.toml"
    spec.write_bytes(content)
    run = prism_run(capsys, str(spec)).expect(2, str(spec), message)
    assert len(run.err) < 1000, f"{len(run.err)} characters"


def test_many_problems_are_listed_at_once_but_capped(tmp_path, toy_registry, capsys):
    spec = write_spec(tmp_path)
    overrides = [f"train.unknown_{i}=1" for i in range(80)]
    run = prism_run(capsys, str(spec), *overrides).expect(2, "80 problems", "... and 30 more")
    assert len(run.err.splitlines()) == 52


def test_a_spec_error_under_the_real_entry_point_prints_no_traceback(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_bytes(_nested_arrays(3000).encode())
    out = run_worker(str(spec), "train.per_device_batch_size=0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "nested too deeply" in out.stderr and len(out.stderr) < 500
