"""Sessions for prism's tests, plugins, lint and import-time checks.

A torch environment is ~5.7 GB, so every session builds on one shared *base* environment that holds the third-party
dependencies from constraints.txt (``.nox/_base``, made once and reused while constraints.txt is unchanged). Each
session's own virtualenv sees it through a ``.pth`` file and installs only prism's packages, non-editable, so
packaging and entry-point mistakes show up. Select plugins with ``PLUGINS=siglip,llama2`` or ``SKIP_PLUGINS=...``.

    nox                      # everything CI runs
    nox -s tests             # core and cross-plugin tests, every plugin installed
    nox -s "plugin(siglip)"  # core + one plugin (and the prism plugins it depends on), its own tests
    nox -s trackers          # real TensorBoard and W&B trackers, installed as prism-core's extras
    nox -s vlm_eval_lmms     # lmms-eval --model prism (the vlm-eval plugin's lmms-eval extra)
    nox -s peft_qlora        # QLoRA's 4-bit tests (the peft plugin's qlora extra: bitsandbytes)
    nox -s dev               # .venv with everything installed editable, for working on prism

Pins of optional extras sit at the end of constraints.txt, after EXTRAS_MARKER: the base environment depends only on
what comes before it, so pinning an extra does not rebuild it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

import nox
import tomllib

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
BASE = ROOT / ".nox" / "_base"
PLUGINS = sorted(p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml"))
# PRISM_REQUIRE_REAL_TOKENIZERS: a test that needs the real SentencePiece/BPE tokenizers fails, not skips, without them.
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1",
       "PRISM_REQUIRE_REAL_TOKENIZERS": "1"}
# Third-party packages the base environment holds: everything prism and its plugins need, nothing of prism.
BASE_PACKAGES = [
    "torch", "torchvision", "timm", "transformers", "tokenizers", "huggingface_hub", "safetensors", "pluggy", "attrs",
    "cattrs", "tomli-w", "pillow", "numpy", "tqdm", "pytest", "pytest-xdist", "hypothesis", "ruff",
    "sentencepiece", "protobuf",
]

EXTRAS_MARKER = b"# Optional extras"

nox.options.sessions = ["lint", "import_time", "tests", "plugin", "example_plugin", "trackers", "vlm_eval_lmms",
                        "peft_qlora"]
nox.options.reuse_existing_virtualenvs = True


def _selected_plugins() -> list[str]:
    chosen = [p for p in os.environ.get("PLUGINS", "").split(",") if p] or PLUGINS
    skipped = {p for p in os.environ.get("SKIP_PLUGINS", "").split(",") if p}
    return [p for p in chosen if p not in skipped]


def _base_site_packages() -> str:
    """Create (once per constraints.txt) the shared environment and return its site-packages path."""
    marker = BASE / "constraints.sha256"
    base_constraints = CONSTRAINTS.read_bytes().partition(EXTRAS_MARKER)[0]
    digest = hashlib.sha256(base_constraints + " ".join(BASE_PACKAGES).encode()).hexdigest()
    python = BASE / "bin" / "python"
    if not (marker.exists() and marker.read_text() == digest):
        venv.create(BASE, with_pip=True, clear=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "-c", CONSTRAINTS, *BASE_PACKAGES], check=True)
        marker.write_text(digest)
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def _sentencepiece_test_model() -> None:
    """Put mistral-common's 32k Llama-style SentencePiece model where prism_core.testing.tokenizers looks for it
    ($PRISM_CACHE/test-data, default ~/.cache/prism/test-data): only the data file, from the pinned wheel."""
    import tempfile
    import zipfile

    target = Path(os.environ.get("PRISM_CACHE") or Path.home() / ".cache" / "prism") / "test-data"
    if (target / "tokenizer.model.v1").is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-c", CONSTRAINTS,
                        "mistral-common", "-d", download], check=True)
        wheel = next(Path(download).glob("mistral_common-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read("mistral_common/data/tokenizer.model.v1")
    partial = target / "tokenizer.model.v1.partial"
    partial.write_bytes(data)
    partial.rename(target / "tokenizer.model.v1")


def _use_base(session: nox.Session) -> None:
    _sentencepiece_test_model()
    base = _base_site_packages()
    site = session.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                       silent=True).strip()
    Path(site, "_prism_base.pth").write_text(base + "\n")
    session.env.update(ENV)


def _prism_dependencies(plugin: str) -> list[str]:
    """Directories of the prism plugins ``plugin`` depends on (e.g. siglip → timm-vision), then itself."""
    by_name = {tomllib.loads((ROOT / "plugins" / p / "pyproject.toml").read_text())["project"]["name"]: p
               for p in PLUGINS}
    order: list[str] = []

    def visit(directory: str) -> None:
        project = tomllib.loads((ROOT / "plugins" / directory / "pyproject.toml").read_text())["project"]
        for requirement in project.get("dependencies", []):
            name = requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
            if name in by_name and by_name[name] not in order:
                visit(by_name[name])
        if directory not in order:
            order.append(directory)

    visit(plugin)
    return [f"plugins/{p}" for p in order]


def _install(session: nox.Session, *paths: str) -> None:
    session.install("-q", "-c", str(CONSTRAINTS), *paths)


@nox.session
def tests(session: nox.Session) -> None:
    """Core and cross-plugin tests with every plugin installed."""
    _use_base(session)
    _install(session, ".[plot]", *(f"plugins/{p}" for p in PLUGINS))
    session.run("python", "-m", "pytest", "tests", "-q", *session.posargs)


@nox.session
@nox.parametrize("plugin", _selected_plugins())
def plugin(session: nox.Session, plugin: str) -> None:
    """prism-core plus one plugin (and only the prism plugins it needs): its own tests."""
    _use_base(session)
    _install(session, ".", *_prism_dependencies(plugin))
    session.run("python", "-m", "pytest", f"plugins/{plugin}/tests", "-q", *session.posargs)


@nox.session
def example_plugin(session: nox.Session) -> None:
    """The documented third-party plugin, installed like any pip package (it lives outside plugins/)."""
    _use_base(session)
    # Its tests compose it with a projector and the tiny Llama: install those the way a user would.
    _install(session, ".", "plugins/projectors", *_prism_dependencies("llama2"), "examples/prism-plugin-example")
    session.run("python", "-m", "pytest", "examples/prism-plugin-example/tests", "-q", *session.posargs)


@nox.session
def trackers(session: nox.Session) -> None:
    """prism-core with its tensorboard and wandb extras, and the strategies the toy runs use: the tracker tests read
    back what real runs wrote (W&B in offline mode: nothing leaves the machine); a missing package fails."""
    _use_base(session)
    _install(session, ".[tensorboard,wandb]", "plugins/single", "plugins/ddp", "plugins/fsdp")
    session.run("python", "-m", "pytest", "tests/train/test_trackers.py", "-q", *session.posargs,
                env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PRISM_REQUIRE_TRACKER": "tensorboard,wandb"})


@nox.session
def vlm_eval_lmms(session: nox.Session) -> None:
    """`lmms-eval --model prism`: prism-plugin-vlm-eval with its lmms-eval extra, and the tiny SigLIP and Llama
    plugins its test composes a model from, on a local lmms-eval task."""
    _use_base(session)
    needed = [d for p in ("vlm-eval", "siglip", "llama2", "projectors", "prompt-formats")
              for d in _prism_dependencies(p)]
    paths = [f"{d}[lmms-eval]" if d == "plugins/vlm-eval" else d for d in dict.fromkeys(needed)]
    _install(session, ".", *paths)
    session.run("python", "-m", "pytest", "plugins/vlm-eval/tests/test_lmms.py", "-q", *session.posargs,
                env={"PRISM_REQUIRE_LMMS_EVAL": "1", "HF_DATASETS_OFFLINE": "1"})


@nox.session
def peft_qlora(session: nox.Session) -> None:
    """prism-plugin-peft with its qlora extra (bitsandbytes): its tests with the 4-bit ones run (on the CPU backend
    without CUDA), failed rather than skipped if bitsandbytes cannot run."""
    _use_base(session)
    _install(session, ".", "plugins/peft[qlora]")
    session.run("python", "-m", "pytest", "plugins/peft/tests", "-q", *session.posargs,
                env={"PRISM_REQUIRE_BITSANDBYTES": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    _use_base(session)
    session.run("python", "-m", "ruff", "check", ".")


@nox.session
def import_time(session: nox.Session) -> None:
    """`import prism_core`, `prism plugins` and `prism-run --help` must not import torch."""
    _use_base(session)
    _install(session, ".", *(f"plugins/{p}" for p in PLUGINS))
    check = ("import sys, runpy\nsys.argv = {argv!r}\ntry:\n    runpy.run_module({module!r}, run_name='__main__')\n"
             "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, {message!r}\n")
    session.run("python", "-c", "import sys, prism_core; assert 'torch' not in sys.modules", silent=True)
    for module, argv in (("prism_core.cli.main", ["prism", "plugins"]), ("prism_core.cli.main", ["prism", "spec",
                         "validate", "quickstart"]), ("prism_core.cli.run", ["prism-run", "--help"])):
        message = f"torch was imported by: {' '.join(argv)}"
        session.run("python", "-c", check.format(module=module, argv=argv, message=message), silent=True)
    timings = session.run("python", "-X", "importtime", "-c", "import prism_core", silent=True,
                          stderr=subprocess.STDOUT)
    rows = [line.split("|") for line in (timings or "").splitlines() if line.startswith("import time:")]
    heavy = sorted({r[2].strip() for r in rows if r[2].strip().split(".")[0] in ("torch", "transformers", "timm")})
    if heavy:
        session.error(f"import prism_core imported {', '.join(heavy)}")
    total = next((int(r[1]) for r in rows if r[2].strip() == "prism_core"), None)
    session.log(f"import prism_core: {total / 1000:.0f} ms" if total else "import prism_core: timing not found")


@nox.session(venv_backend="none")
def dev(session: nox.Session) -> None:
    """A development environment in .venv: everything installed editable, sharing the base torch install."""
    _sentencepiece_test_model()
    _base_site_packages()
    target = ROOT / ".venv"
    if not (target / "bin" / "python").exists():
        venv.create(target, with_pip=True)
    python = str(target / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    base = subprocess.run([str(BASE / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_prism_base.pth").write_text(base + "\n")
    # The plot extra: the quickstart draws its curves (prism plot) into the run directory.
    editable = [arg for p in [".[plot]", *(f"plugins/{p}" for p in PLUGINS)] for arg in ("-e", p)]
    session.run(python, "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), *editable, external=True)
    session.log(f"ready: source .venv/bin/activate  (python {sys.version.split()[0]})")
