"""Push prism models to, and pull them from, the Hugging Face Hub (huggingface_hub honours ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``, ``HF_TOKEN`` and the cache).

A pushed repository holds exactly what ``prism_core.save`` writes (``model.toml``, ``model.safetensors``,
``prism.json``) plus a generated ``README.md`` model card stating the composition and training data, so
``prism_core.load("owner/name")`` rebuilds the model anywhere the plugins are installed.
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


def model_card(model_dir: str | Path, repo_id: str, training_spec: str | Path | None = None) -> str:
    """README.md text: YAML metadata, the composition from ``model.toml``, the data from a training spec (a file or
    a named spec, e.g. ``prism-dinosiglip+7b``) if given."""
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
    lines += ["", "## Use", "", "```python", "import prism_core", "", f'vlm = prism_core.load("{repo_id}")',
              "```", "", "The full resolved spec is `model.toml`; plugin versions are in `prism.json`.", ""]
    return "\n".join(lines)


def push_to_hub(model: Any, repo_id: str, *, token: str | None = None, revision: str | None = None,
                private: bool = False, training_spec: str | Path | None = None,
                commit_message: str = "Upload prism model") -> str:
    """Upload a saved model directory (or a ``PrismVLM``, saved first) in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, (str, Path)):
            model_dir = Path(model)
        else:
            import prism_core

            model_dir = prism_core.save(model, Path(tmp) / "model")
        missing = [f for f in MODEL_FILES if not (model_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{model_dir} is not a saved prism model: {', '.join(missing)} missing")
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        card = model_card(model_dir, repo_id, training_spec).encode("utf-8")
        operations = [CommitOperationAdd(f, str(model_dir / f)) for f in MODEL_FILES]
        operations.append(CommitOperationAdd("README.md", card))
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
