import subprocess
import sys

from prism_core.cli.run import _split_positionals, main
from tests.train.conftest import REPO, run_worker, subprocess_env
from tests.train.toy_run import spec_toml


def test_help_does_not_import_torch():
    code = ("import sys\nfrom prism_core.cli.run import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=subprocess_env(), cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip().endswith("False"), out.stdout + out.stderr
    assert "--resume RUN_DIR" in out.stdout and "torchrun" in out.stdout


def test_spec_errors_exit_2_with_every_problem_and_no_traceback(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path)))
    out = run_worker(str(spec), "train.learning_rate=-1", "train.per_device_batch_size=3")
    assert out.returncode == 2
    assert "2 problems" in out.stderr and "train.learning_rate: must be > 0" in out.stderr
    assert "train.global_batch_size: must be a multiple of per_device_batch_size (3)" in out.stderr
    assert "Traceback" not in out.stderr
    typo = run_worker(str(spec), "train.epoks=2")
    assert typo.returncode == 2 and "train.epoks: unknown field; did you mean 'epochs'?" in typo.stderr
    assert "Traceback" not in typo.stderr


def test_a_missing_tracker_package_exits_2_before_building_anything(tmp_path, toy_registry, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path)))
    assert main([str(spec), 'train.trackers=["jsonl", "nope"]']) == 2
    assert "unknown tracker 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "toy").exists()


def test_no_spec_means_quickstart_and_a_lone_override_is_not_a_file_name():
    assert _split_positionals(None, []) == ("quickstart", [])
    assert _split_positionals("train.max_steps=3", []) == ("quickstart", ["train.max_steps=3"])
    assert _split_positionals("my.toml", ["a=1"]) == ("my.toml", ["a=1"])


def test_export_writes_a_loadable_model_for_a_chosen_step(tmp_path, toy_registry):
    from prism_core.io import load

    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), max_steps=2, save_every=1))
    assert main([str(spec)]) == 0
    assert main(["--export", str(tmp_path / "toy"), "--step", "1"]) == 0
    model = load(tmp_path / "toy" / "export-step-00000001")
    assert model.projector is not None
    assert main(["--export", str(tmp_path / "toy"), "--step", "5"]) == 2
