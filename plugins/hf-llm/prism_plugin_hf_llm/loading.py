"""Finding, checking and loading an LLM and its tokenizer.

Everything that can fail for a user (no weights offline, a gated repository without a token, a tokenizer that breaks
the BOS contract, flash-attn missing) fails here, before any large allocation, with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from prism_plugin_hf_llm.backbone import HFCausalLMBackbone
    from prism_plugin_hf_llm.spec import HFCausalLMSpec

#: Files one of which must exist for a checkpoint to have weights (sharded or not, safetensors or legacy).
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)

#: Text the BOS contract is checked on.
BOS_PROBE = "What colour is the shape?"


class LLMLoadError(RuntimeError):
    """The LLM or its tokenizer cannot be loaded; the message says what is missing and how to get it."""


class BOSContractError(ValueError):
    """The tokenizer does not add exactly one BOS the way the prompt formats and image splicing expect."""


# -- where things come from ------------------------------------------------------------------------------------------
def hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(flag not in ("", "0", "false", "no") for flag in flags)


def resolve_token(token_file: str | None) -> str | None:
    """The Hugging Face token: ``token_file`` if given, else ``HF_TOKEN``, else huggingface_hub's stored token."""
    if token_file is not None:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise LLMLoadError(f"token_file {token_file!r} does not exist (it should hold a Hugging Face token)")
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise LLMLoadError(f"token_file {token_file!r} is empty")
        return token
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a directory."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _download_hint(spec: HFCausalLMSpec, repo: str) -> str:
    hint = f"download it with `hf download {repo}`"
    if spec.gated:
        hint += (f" (gated: accept the licence at https://huggingface.co/{repo} and provide a token through HF_TOKEN,"
                 " `hf auth login` or the spec's token_file)")
    return hint + ", point model_id at a local save_pretrained directory, or set weights = 'random'"


def resolve_source(spec: HFCausalLMSpec, name: str, *, need_weights: bool, what: str = "model") -> str:
    """A local directory or a hub id that ``from_pretrained`` can open without surprises.

    Offline, a hub id must already be in the cache (config and, for weights, a weight file): checked by looking
    at the cache, so a missing model fails in milliseconds instead of after network retries.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if what == "model" and not (path / "config.json").is_file():
            raise LLMLoadError(f"{spec.name}: {path} has no config.json (expected a save_pretrained directory)")
        if need_weights and not any((path / f).is_file() for f in WEIGHT_FILES):
            raise LLMLoadError(f"{spec.name}: {path} has no weights (looked for {', '.join(WEIGHT_FILES)})")
        return str(path)
    if _looks_like_path(name):
        raise LLMLoadError(f"{spec.name}: {what} directory {name!r} does not exist")
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        def cached(filename: str) -> bool:
            return isinstance(try_to_load_from_cache(name, filename, revision=spec.revision), str)

        probe = "config.json" if what == "model" else "tokenizer_config.json"
        missing = not cached(probe) or (need_weights and not any(cached(f) for f in WEIGHT_FILES))
        if missing:
            kind = "weights" if need_weights else f"{what} files"
            raise LLMLoadError(f"{spec.name}: the {kind} of {name!r} are not in the Hugging Face cache and the hub is "
                               f"offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE); {_download_hint(spec, name)}")
    return name


@contextlib.contextmanager
def explained_hub_errors(spec: HFCausalLMSpec, repo: str) -> Iterator[None]:
    """Turn hub access errors into messages that say what to do."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        yield
    except GatedRepoError as exc:
        raise LLMLoadError(f"{spec.name}: {repo!r} is gated: accept the licence at https://huggingface.co/{repo} "
                           "and provide a token through HF_TOKEN, `hf auth login` or the spec's token_file") from exc
    except RepositoryNotFoundError as exc:
        raise LLMLoadError(f"{spec.name}: no hub repository {repo!r} (or it is private and no valid token was "
                           "given)") from exc


def check_attention(spec: HFCausalLMSpec) -> None:
    if spec.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise LLMLoadError(f"{spec.name}: attn_implementation = 'flash_attention_2' needs the flash-attn package "
                           "(pip install flash-attn --no-build-isolation); use 'sdpa' (the default) without it")


# -- tokenizer -------------------------------------------------------------------------------------------------------
def check_bos_contract(tokenizer: Any, *, bos_in_prompt_text: bool, name: str) -> None:
    """Raise ``BOSContractError`` unless prompts will start with exactly one BOS (see ``LLMBackbone``)."""
    bos_id, bos = tokenizer.bos_token_id, tokenizer.bos_token
    if bos_id is None:
        raise BOSContractError(f"{name}: the tokenizer has no BOS token")
    without = tokenizer(BOS_PROBE, add_special_tokens=False).input_ids
    if without[:1] == [bos_id]:
        raise BOSContractError(f"{name}: the tokenizer adds BOS even with add_special_tokens=False")
    if bos_in_prompt_text:
        # The prompt format writes the BOS string; it must come out as the single BOS id.
        first = tokenizer(bos + BOS_PROBE).input_ids
        if first[:1] != [bos_id] or first[1:2] == [bos_id]:
            raise BOSContractError(f"{name}: with bos_in_prompt_text, {bos + BOS_PROBE!r} must tokenize to one BOS "
                                   f"({bos_id}) followed by text, got {first[:3]}...")
        return
    with_special = tokenizer(BOS_PROBE).input_ids
    if with_special[:1] != [bos_id] or with_special[1:2] == [bos_id]:
        raise BOSContractError(
            f"{name}: tokenizer({BOS_PROBE!r}) must start with exactly one BOS ({bos_id}), got {with_special[:3]}...; "
            "if the model's prompt format writes BOS into the text itself (as Phi-2's does), set "
            "bos_in_prompt_text = true"
        )


def prepare_tokenizer(tokenizer: Any, spec: HFCausalLMSpec) -> Any:
    """Add the PAD token where missing, pad on the right (training), cap the length, check the BOS contract."""
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": spec.pad_token})
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = spec.max_length
    check_bos_contract(tokenizer, bos_in_prompt_text=spec.bos_in_prompt_text, name=spec.name)
    return tokenizer


def load_tokenizer(spec: HFCausalLMSpec) -> Any:
    from transformers import AutoTokenizer

    source = spec.tokenizer_source()
    is_model_repo = spec.tokenizer_id is None
    token = resolve_token(spec.token_file)
    source = resolve_source(spec, source, need_weights=False, what="model" if is_model_repo else "tokenizer")
    with explained_hub_errors(spec, source):
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=spec.revision if is_model_repo else None, token=token,
            model_max_length=spec.max_length, padding_side="right",
        )
    return prepare_tokenizer(tokenizer, spec)


# -- model -----------------------------------------------------------------------------------------------------------
def _torch_dtype(spec: HFCausalLMSpec) -> torch.dtype:
    import torch

    return getattr(torch, spec.dtype)


def _is_local(spec: HFCausalLMSpec, filename: str) -> bool:
    """model_id is a local directory, or ``filename`` of it is in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    assert spec.model_id is not None, "checked by problems()"
    return Path(spec.model_id).expanduser().is_dir() or isinstance(
        try_to_load_from_cache(spec.model_id, filename, revision=spec.revision), str)


def checkpoint_config(spec: HFCausalLMSpec, *, local_only: bool) -> Any | None:
    """model_id's own config.json (what ``from_pretrained`` would use), or None when ``local_only`` and it is
    neither a local directory nor in the Hugging Face cache."""
    from transformers import AutoConfig

    if local_only and not _is_local(spec, "config.json"):
        return None
    assert spec.model_id is not None, "checked by problems()"
    source = resolve_source(spec, spec.model_id, need_weights=False)
    with explained_hub_errors(spec, source):
        return AutoConfig.from_pretrained(source, revision=spec.revision, token=resolve_token(spec.token_file),
                                          local_files_only=local_only)


def use_checkpoint_generation_config(spec: HFCausalLMSpec, model: Any, *, local_only: bool) -> None:
    """Generation defaults from model_id's generation_config.json, as ``from_pretrained`` would set them."""
    from transformers import GenerationConfig

    if local_only and not _is_local(spec, "generation_config.json"):
        return
    assert spec.model_id is not None, "checked by problems()"
    source = resolve_source(spec, spec.model_id, need_weights=False)
    with contextlib.suppress(OSError):  # the checkpoint ships none: keep the defaults derived from the config
        model.generation_config = GenerationConfig.from_pretrained(
            source, revision=spec.revision, token=resolve_token(spec.token_file), local_files_only=local_only)


def build_config(spec: HFCausalLMSpec, vocab_size: int | None, *, on_meta: bool = False) -> Any:
    """The model config: pretrained weights bring their own config.json (on meta: when it is already local), else
    the spec's fields when it names a model_type, else model_id's config.json with the spec's fields applied."""
    from transformers import AutoConfig

    config = checkpoint_config(spec, local_only=on_meta) if spec.weights == "pretrained" else None
    if config is None and spec.model_type is not None:
        config = AutoConfig.for_model(spec.model_type, **spec.architecture())
    elif config is None:
        config = checkpoint_config(spec, local_only=False)
        for key, value in spec.architecture().items():
            setattr(config, key, value)
    if vocab_size is not None:
        config.vocab_size = vocab_size
    return config


def build_backbone(spec: HFCausalLMSpec, *, device: str | None = None) -> HFCausalLMBackbone:
    """The model is constructed on the meta device, then, unless the caller builds on meta (``device="meta"`` or
    under ``torch.device("meta")``), materialised on ``device``: pretrained weights memory-mapped from model_id's
    files, everything else from the model's own seeded initialisation (see ``HFCausalLMBackbone``).

    On meta, nothing is downloaded and the tokenizer loads on first use when the spec knows its size
    (``tokenizer_size``, as every preset does).
    """
    from transformers import AutoModelForCausalLM

    from prism_core.materialize import build_on_meta, building_on_meta
    from prism_plugin_hf_llm.backbone import HFCausalLMBackbone

    on_meta = device == "meta" or building_on_meta()
    check_attention(spec)
    model_source = None
    if spec.weights == "pretrained" and not on_meta:
        assert spec.model_id is not None, "checked by problems()"
        model_source = resolve_source(spec, spec.model_id, need_weights=True)  # fail fast, before the tokenizer
    tokenizer = None
    if on_meta and spec.tokenizer_size is not None:
        rows = spec.padded_vocab_size(spec.tokenizer_size + 1)  # + PAD
    else:
        tokenizer = load_tokenizer(spec)
        rows = spec.padded_vocab_size(len(tokenizer))
    config = build_config(spec, rows, on_meta=on_meta)

    def make() -> HFCausalLMBackbone:
        model = AutoModelForCausalLM.from_config(config, attn_implementation=spec.attn_implementation,
                                                 dtype=_torch_dtype(spec))
        if spec.weights == "pretrained":
            use_checkpoint_generation_config(spec, model, local_only=on_meta)
        return HFCausalLMBackbone(model, tokenizer, spec=spec, tokenizer_loader=lambda: load_tokenizer(spec),
                                  model_source=model_source)

    return build_on_meta(make, device="meta" if on_meta else device)
