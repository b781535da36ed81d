"""Push prism models to, and pull them from, the Hugging Face Hub (huggingface_hub honours ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``, ``HF_TOKEN`` and the cache).

A pushed repository holds exactly what ``prism_core.save`` writes (``model.toml``, ``model.safetensors``,
``prism.json``) plus a generated ``README.md`` model card stating the composition and training data, so
``prism_core.load("owner/name")`` rebuilds the model anywhere the plugins are installed. Pushing a run directory
(``prism-run``'s output: its final ``model/``) also puts the run's evaluation reports (``eval*.json``) and its
training curves (``curves.png``, drawn by ``prism plot``) into the card.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODEL_FILES = ("model.toml", "model.safetensors", "prism.json")
PLOT_FILE = "curves.png"


def _describe(table: dict[str, Any] | None) -> str:
    if not table:
        return "—"
    label = table.get("kind", "?")
    return f"`{label}` (preset `{table['preset']}`)" if table.get("preset") else f"`{label}`"


def _filled_data(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The data table with its preset expanded (the annotation files it names), when the data plugin is installed."""
    if not data:
        return data
    from prism_core.spec import DatasetSpec, SpecError, structure, to_dict

    try:
        return {**to_dict(structure(data, DatasetSpec, "training spec [data]")), **data}
    except (SpecError, ValueError, TypeError):  # plugin not installed here: the preset name still says it
        return data


def model_and_run_dirs(path: str | Path) -> tuple[Path, Path | None]:
    """(saved model directory, the run directory it was trained in, or None) for a run directory (meaning its final
    ``model/``), a run's ``model/``, or any saved model directory."""
    path = Path(path)
    if (path / "spec.toml").is_file() and (path / "model" / "model.toml").is_file():
        return path / "model", path
    if path.name == "model" and (path.parent / "spec.toml").is_file():
        return path, path.parent
    return path, None


BLIND_CONTROL = ("*blind*: the same questions with the image replaced by zeros, the model choosing among each "
                 "question type's valid answers (*blind gen*: answering freely); a model that uses the image falls to "
                 "chance there.")


def _evaluation(run_dir: Path) -> list[str]:
    """The card's evaluation section: the run's benchmark results (``evaluation/model/results.json``) and every
    held-out report (``eval*.json``, with the blind control), as ``prism eval`` prints them."""
    import json

    from prism_core.evaluation import RESULTS_FILE, format_summary
    from prism_core.evaluation.conversations import format_report

    benchmarks = run_dir / "evaluation" / "model" / RESULTS_FILE
    sections = [(benchmarks, format_summary)] if benchmarks.is_file() else []
    sections += [(path, format_report) for path in sorted(run_dir.glob("eval*.json"))]
    lines = ["## Evaluation", ""] if sections else []
    for path, formatter in sections:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            table = formatter(report)
        except (ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError) as exc:
            raise ValueError(f"{path}: not an evaluation report written by prism eval ({type(exc).__name__}: "
                             f"{exc})") from None
        if formatter is format_summary:
            lines += ["Benchmarks (`prism eval`), the final model:"]
        else:
            lines += [f"Held-out exact match, `{path.name}`, {report.get('split', '?')} split. {BLIND_CONTROL}"]
        lines += ["", "```text", table, "```", ""]
    return lines


def _curves(run_dir: Path, tmp: Path) -> Path | None:
    """The run's curves, drawn now (the run may have gone on since it last drew them), else the ones it has."""
    from prism_core.plot import PlotError, PlotUnavailableError, plot_runs

    try:
        return plot_runs([run_dir], tmp / PLOT_FILE)
    except PlotUnavailableError:  # no matplotlib here: the image the run drew, if it did
        existing = run_dir / PLOT_FILE
        return existing if existing.is_file() else None
    except PlotError:  # no metrics.jsonl: nothing to draw
        return None


def model_card(model_dir: str | Path, repo_id: str, training_spec: str | Path | None = None, *,
               run_dir: str | Path | None = None, with_curves: bool = False) -> str:
    """README.md text: YAML metadata, the composition from ``model.toml``, the data from a training spec (a file or
    a named spec, e.g. ``prism-dinosiglip+7b``) if given; with ``run_dir``, its evaluation reports, and with
    ``with_curves``, the training curves (``curves.png``, uploaded beside the card)."""
    model = tomllib.loads((Path(model_dir) / "model.toml").read_text(encoding="utf-8"))
    model = model.get("model", model)  # a RunSpec-shaped file nests the model table
    run: dict[str, Any] = {}
    if training_spec is not None:  # a spec file, or a named spec such as a released model's recipe
        from prism_core.spec import read_spec_text

        run = tomllib.loads(read_spec_text(training_spec)[0])
    data, train = _filled_data(run.get("data")), run.get("train", {})
    lines = ["---", "library_name: prism", "pipeline_tag: image-text-to-text", "tags:", "- prism", "- vlm",
             "- prismatic", "---", "", f"# {repo_id}", "",
             "A vision-language model composed with [prism](https://github.com/TRI-ML/prismatic-vlms) plugins: "
             "vision backbone → projector → causal language model, image patches spliced after BOS.", "",
             "## Composition", "", "| Part | Component |", "|---|---|",
             f"| Vision backbone | {_describe(model.get('vision'))} |",
             f"| Projector | {_describe(model.get('projector'))} |",
             f"| Language model | {_describe(model.get('llm'))} |",
             f"| Prompt format | {_describe(model.get('prompt_format') or {'kind': 'LLM default'})} |",
             "", "## Training data", ""]
    if data:
        stage = train.get("stage", "finetune")
        lines.append(f"{_describe(data)}; stage `{stage}`, "
                     f"{train.get('epochs', 1)} epoch(s), learning rate {train.get('learning_rate', '?')}.")
        components = data.get("align" if stage == "align" else "finetune") or []
        lines += [f"- `{c['annotations']}`" for c in components if isinstance(c, dict) and "annotations" in c]
    else:
        lines.append("Not recorded with this upload.")
    lines.append("")
    if run_dir is not None:
        lines += _evaluation(Path(run_dir))
    if with_curves:
        lines += ["## Training curves", "", f"![loss, learning rate, gradient norm and held-out accuracy against "
                  f"steps]({PLOT_FILE})", ""]
    lines += ["## Use", "", "```python", "import prism_core", "", f'vlm = prism_core.load("{repo_id}")',
              "```", "", "The full resolved spec is `model.toml`; plugin versions are in `prism.json`.", ""]
    return "\n".join(lines)


def push_to_hub(model: Any, repo_id: str, *, token: str | None = None, revision: str | None = None,
                private: bool = False, training_spec: str | Path | None = None,
                commit_message: str = "Upload prism model") -> str:
    """Upload a saved model directory, a run directory (its final model, evaluation and curves), or a ``PrismVLM``
    (saved first), in one commit; returns the commit URL. A run's ``spec.toml`` is the default ``training_spec``."""
    from huggingface_hub import CommitOperationAdd, HfApi

    run_dir = None
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, (str, Path)):
            model_dir, run_dir = model_and_run_dirs(model)
        else:
            import prism_core

            model_dir = prism_core.save(model, Path(tmp) / "model")
        missing = [f for f in MODEL_FILES if not (model_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{model_dir} is not a saved prism model: {', '.join(missing)} missing")
        if run_dir is not None and training_spec is None:
            training_spec = run_dir / "spec.toml"
        curves = _curves(run_dir, Path(tmp)) if run_dir is not None else None
        card = model_card(model_dir, repo_id, training_spec, run_dir=run_dir,
                          with_curves=curves is not None).encode("utf-8")  # before touching the Hub: it may fail
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [CommitOperationAdd(f, str(model_dir / f)) for f in MODEL_FILES]
        operations.append(CommitOperationAdd("README.md", card))
        if curves is not None:
            operations.append(CommitOperationAdd(PLOT_FILE, str(curves)))
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
        return str(info.commit_url)


class HubError(RuntimeError):
    """A pull failed; the message names the repository and what to do (token, offline cache, revision)."""


def pull_from_hub(repo_id: str, *, revision: str | None = None, token: str | None = None,
                  cache_dir: str | Path | None = None, local_dir: str | Path | None = None,
                  local_files_only: bool = False) -> Path:
    """Download (or reuse from the cache) a pushed prism model; returns its local directory.

    ``local_dir`` copies the files into a plain folder instead of returning the cache snapshot.
    """
    import os

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, token=token, cache_dir=cache_dir,
                                      local_dir=local_dir, local_files_only=local_files_only,
                                      allow_patterns=[*MODEL_FILES, "README.md"]))
    except GatedRepoError as exc:
        raise HubError(f"{where} is gated: accept its terms on the Hub, then pass --hf-token / token= "
                       f"(or set HF_TOKEN)") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"{where}: repository not found, or private and not visible without its token "
                       f"(pass --hf-token / token= or set HF_TOKEN)") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{where}: no such revision (branch, tag or commit) in the repository") from exc
    except LocalEntryNotFoundError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or local_files_only
        why = ("offline mode (HF_HUB_OFFLINE / local_files_only) is on and it is not in the cache" if offline
               else "it is not in the cache and the Hub could not be reached")
        raise HubError(f"{where}: {why}; pull it once while online (`prism hub pull {repo_id}`)") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"{where}: download failed: {exc}") from exc


def load_from_hub(repo_id: str, **kwargs: Any) -> Any:
    """``pull_from_hub`` then ``prism_core.load`` (keyword arguments go to ``pull_from_hub``)."""
    import prism_core

    return prism_core.load(pull_from_hub(repo_id, **kwargs))
