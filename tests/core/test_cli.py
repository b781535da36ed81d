"""The command line as a user meets it: exit codes, messages, and no torch on the light paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prism_core.cli.main import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env or ENV, timeout=120)


@pytest.mark.parametrize("argv", [["plugins"], ["plugins", "--json"], ["--help"], ["spec", "validate", "SPEC"]])
def test_light_commands_do_not_import_torch(argv, tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("schema = 1\n[model]\nvision = {kind = 'nope'}\n")
    argv = [str(spec) if a == "SPEC" else a for a in argv]
    code = ("import sys\nfrom prism_core.cli.main import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'timm') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    result = run_python(code)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_import_prism_core_does_not_import_torch():
    result = run_python("import sys, prism_core; prism_core.RunSpec; print('torch' in sys.modules)")
    assert result.stdout.strip() == "False", result.stderr


def test_prism_run_help_does_not_import_torch():
    result = run_python("import sys\nfrom prism_core.cli.run import main\ntry:\n    main(['--help'])\n"
                        "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    assert result.stdout.strip().endswith("False"), result.stdout + result.stderr


def test_a_spec_with_several_mistakes_exits_2_listing_all_without_traceback(tmp_path):
    spec = tmp_path / "mistakes.toml"
    spec.write_text('schema = 1\n[model]\nvision = { kind = "no-such-vision", image_size = "big" }\n'
                    'llm = { kind = "no-such-llm" }\n[train]\nepochs = "two"\nstage = "pretrain"\n')
    env = {**ENV, "PRISM_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the same answer whatever is installed
    result = subprocess.run([sys.executable, "-m", "prism_core.cli.main", "spec", "validate", str(spec)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"{spec}: 6 problems"
    assert any(line.startswith("  model.vision: unknown vision backbone kind 'no-such-vision'") for line in lines)
    assert "  model.projector: required field missing" in lines
    assert "  train.epochs: expected int, got str 'two'" in lines
    assert any(line.startswith("  train.stage: expected one of") for line in lines)
    assert "  train.strategy: unknown train strategy kind 'single' (none installed); it is provided by " \
           "prism-plugin-single: pip install prism-plugin-single" in lines


def test_missing_spec_file_is_a_clear_error(capsys):
    assert main(["spec", "validate", "does-not-exist.toml"]) == 2
    assert "no such file, and no named spec 'does-not-exist.toml'" in capsys.readouterr().err


def test_plugins_json_lists_every_installed_kind(capsys):
    from importlib.metadata import entry_points

    from prism_core.types import Role

    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    listed = {(r["role"], r["kind"]) for r in rows}
    for role in Role:
        for ep in entry_points(group=role.group):
            assert (role.value, ep.name) in listed


def test_hook_reference_in_docs_matches_the_hookspecs():
    """docs/hooks.md documents each hook with its exact signature: the two cannot drift."""
    import inspect

    from prism_core.hooks import PrismHookSpecs

    doc = (Path(__file__).parents[2] / "docs" / "hooks.md").read_text()
    specs = {name: fn for name, fn in vars(PrismHookSpecs).items() if name.startswith("prism_")}
    documented = {line[4:].split("(")[0] for line in doc.splitlines() if line.startswith("### prism_")}
    assert documented == set(specs)
    for name, fn in specs.items():
        args = [p for p in inspect.signature(fn).parameters if p != "self"]
        assert f"### {name}({', '.join(args)})" in doc, f"docs/hooks.md: signature of {name} differs"
        first_line = inspect.getdoc(fn).splitlines()[0]
        assert first_line in doc, f"docs/hooks.md: {name} docstring differs"
