"""``prism plugins`` against throwaway distributions: ``show KIND``, named-spec conflicts, and the listing memo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from prism_core.cli.main import main
from prism_core.registry import Registry, use_registry
from prism_core.spec import SpecError, load_spec
from prism_core.types import Role

SPEC_MODULE = '''
from typing import ClassVar
import attrs
from prism_core.spec import ProjectorSpec, spec_field

@attrs.frozen(kw_only=True)
class WideSpec(ProjectorSpec):
    """A projector that is mostly wide."""

    kind: ClassVar[str] = "wide"
    presets: ClassVar = {PRESETS}
    width: int = spec_field(8, help="hidden width")
    activation: str = spec_field("gelu", help="non-linearity between the layers")
    dims: tuple[int, ...] = spec_field((1, 2), help="a tuple default")
    depth: int = spec_field(help="layers (no default)")
'''


def wide_plugin(fake_distribution, presets='{"wide-small": {"width": 4, "depth": 1}}', module="wide_mod"):
    fake_distribution("prism-plugin-wide", {"prism.projectors": {"wide": f"{module}:WideSpec"}},
                      files={f"{module}.py": SPEC_MODULE.replace("{PRESETS}", presets)})


def test_show_prints_fields_with_types_defaults_and_help_presets_and_distribution(fake_distribution, capsys):
    wide_plugin(fake_distribution)
    with use_registry(Registry()):
        assert main(["plugins", "show", "wide"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wide: projector kind from prism-plugin-wide 0.1.0 (wide_mod:WideSpec)\n")
    assert "A projector that is mostly wide." in out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "width int 8 hidden width" in lines
    assert 'activation str "gelu" non-linearity between the layers' in lines
    assert "dims tuple[int, ...] [1, 2] a tuple default" in lines
    assert "depth int required layers (no default)" in lines
    assert "wide-small: width = 4, depth = 1" in lines
    assert 'use it: [model.projector] kind = "wide" preset = "wide-small"' in lines


def test_show_json_and_unknown_kinds(fake_distribution, capsys):
    wide_plugin(fake_distribution, module="wide_mod2")
    with use_registry(Registry()):
        assert main(["plugins", "show", "wide", "--json"]) == 0
        [detail] = json.loads(capsys.readouterr().out)
        assert detail["distribution"] == "prism-plugin-wide" and detail["role"] == "projectors"
        assert {"name": "width", "type": "int", "required": False, "default": 8, "help": "hidden width"} \
            in detail["fields"]
        assert detail["presets"] == {"wide-small": {"width": 4, "depth": 1}}
        assert main(["plugins", "show", "wdie"]) == 2
        assert "no installed kind 'wdie' (see them all: prism plugins); did you mean 'wide'?" in \
            capsys.readouterr().err
        assert main(["plugins", "show", "wide", "--role", "datasets"]) == 2


def test_a_named_spec_two_distributions_ship_is_a_conflict_naming_both(fake_distribution, capsys):
    for dist in ("prism-plugin-one", "prism-plugin-two"):
        module = dist.replace("-", "_")
        fake_distribution(dist, {"prism.specs": {"tiny-recipe": f"{module}:TEXT"}},
                          files={f"{module}.py": "TEXT = 'schema = 1'\n"})
    with use_registry(Registry()) as registry:
        with pytest.raises(SpecError, match=r"named spec 'tiny-recipe' is registered by more than one "
                                            r"distribution: prism-plugin-one, prism-plugin-two"):
            load_spec("tiny-recipe")
        assert main(["spec", "validate", "tiny-recipe"]) == 2  # a user-facing error: exit 2, no traceback
        assert "prism-plugin-one, prism-plugin-two; uninstall one of them" in capsys.readouterr().err
        assert main(["plugins", "--json", "--no-cache"]) == 0
        rows = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "tiny-recipe"]
        assert rows == [{"distribution": "prism-plugin-one", "version": "", "role": "specs", "kind": "tiny-recipe",
                         "presets": [], "status": "conflict", "error": "also shipped by prism-plugin-two"}]
        assert "tiny-recipe" in registry.spec_names()


def listed_presets(capsys) -> dict[str, list[str]]:
    assert main(["plugins", "--json"]) == 0
    return {r["kind"]: r["presets"] for r in json.loads(capsys.readouterr().out) if r["role"] == "projectors"}


def test_the_listing_memo_is_reused_until_a_file_it_came_from_changes(fake_distribution, tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setenv("PRISM_CACHE", str(tmp_path / "cache"))
    wide_plugin(fake_distribution, module="wide_memo")
    module_file = tmp_path / "site-packages" / "wide_memo.py"
    with use_registry(Registry()):
        assert listed_presets(capsys)["wide"] == ["wide-small"]  # imported, and memoised
    with use_registry(Registry()) as registry:
        assert listed_presets(capsys)["wide"] == ["wide-small"]
        [info] = [i for i in registry.kinds(Role.PROJECTOR) if i.kind == "wide"]
        assert info.spec_class is None  # listed from the memo: the spec module was not imported again
    # Another plugin is installed: it is imported, "wide" still comes from the memo, which now holds both.
    source = SPEC_MODULE.replace('"wide"', '"narrow"').replace("{PRESETS}", '{"narrow-1": {"depth": 1}}')
    fake_distribution("prism-plugin-narrow", {"prism.projectors": {"narrow": "narrow_memo:WideSpec"}},
                      files={"narrow_memo.py": source})
    sys.modules.pop("wide_memo", None)  # as in a new process
    with use_registry(Registry()):
        listed = listed_presets(capsys)
        assert (listed["wide"], listed["narrow"]) == (["wide-small"], ["narrow-1"])
        assert "wide_memo" not in sys.modules
    # An edit to the plugin (as in an editable install) shows at once.
    module_file.write_text(SPEC_MODULE.replace("{PRESETS}", '{"wide-small": {}, "wide-large": {"width": 64}}'))
    os.utime(module_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    sys.modules.pop("wide_memo", None)  # as in a new process
    with use_registry(Registry()):
        assert listed_presets(capsys)["wide"] == ["wide-large", "wide-small"]


def test_a_kind_that_failed_to_load_is_never_memoised(fake_distribution, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRISM_CACHE", str(tmp_path / "cache"))
    source = SPEC_MODULE.replace('"wide"', '"later"').replace("{PRESETS}", '{"later-1": {"depth": 1}}')
    fake_distribution("prism-plugin-later", {"prism.projectors": {"later": "later_mod:WideSpec"}},
                      files={"later_mod.py": "import a_dependency_installed_later\n" + source})
    with use_registry(Registry()):
        assert main(["plugins", "--json"]) == 0
        [row] = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "later"]
        assert row["status"] == "error" and "a_dependency_installed_later" in row["error"]
    # The missing package gets installed: the next listing loads the plugin, with no stale error.
    (tmp_path / "site-packages" / "a_dependency_installed_later.py").write_text("")
    sys.modules.pop("later_mod", None)
    with use_registry(Registry()):
        assert main(["plugins", "--json"]) == 0
        [row] = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "later"]
    assert row["status"] == "ok" and row["presets"] == ["later-1"] and row["error"] is None
    sys.modules.pop("a_dependency_installed_later", None)


def test_show_and_a_memoised_listing_do_not_import_torch_or_the_spec_machinery(tmp_path):
    env = {**os.environ, "PRISM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    code = ("import sys\nfrom prism_core.cli.main import main\nimport contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert main({argv!r}) == 0\n"
            "print(sorted(m for m in ('torch', 'transformers', 'prism_core.spec', 'attrs') if m in sys.modules))")
    def run(argv):
        result = subprocess.run([sys.executable, "-c", code.format(argv=argv)], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run(["plugins", "show", "siglip"]) == "['attrs', 'prism_core.spec']"  # no torch
    assert run(["plugins", "--json"]) == "['attrs', 'prism_core.spec']"  # the first listing imports the plugins
    assert run(["plugins", "--json"]) == "[]"  # the next one reads the memo
