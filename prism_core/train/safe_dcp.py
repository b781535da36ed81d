"""Reading ``torch.distributed.checkpoint`` directories without running code found in them.

DCP keeps two things as pickles: the ``.metadata`` file (``FileSystemReader.read_metadata`` calls ``pickle.load``)
and every non-tensor entry of the state (optimizer hyperparameters; ``DefaultLoadPlanner.load_bytes`` calls
``torch.load(weights_only=False)``). A run directory is something people hand each other, so either file could
carry a payload that runs on load. Here the metadata goes through an unpickler that admits only DCP's own metadata
classes and the torch sizes, dtypes and layouts they hold, and non-tensor entries through
``torch.load(weights_only=True)``, which admits plain containers and numbers only. Anything else is refused with an
``UnsafeCheckpointError`` naming the file; nothing it contains is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import filesystem as dcp_filesystem
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from prism_core.train.checkpoint import CheckpointError

_METADATA_CLASSES = ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
                     "ChunkStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING")


class UnsafeCheckpointError(CheckpointError):
    """A DCP file asked to build something that is not checkpoint metadata (or could not be read as such)."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import pathlib

    allowed: dict[tuple[str, str], Any] = {
        (dcp_metadata.__name__, name): getattr(dcp_metadata, name)
        for name in _METADATA_CLASSES if hasattr(dcp_metadata, name)
    }
    allowed[(dcp_filesystem.__name__, "_StorageInfo")] = dcp_filesystem._StorageInfo
    allowed[("torch", "Size")] = torch.Size
    # torch pickles a layout as _get_layout("torch.strided"): a lookup among torch's own layout objects.
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    for name, value in vars(torch).items():
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            allowed[("torch", name)] = value
    for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"):  # StorageMeta.checkpoint_id
        allowed[("pathlib", name)] = getattr(pathlib, name)
    allowed[("collections", "OrderedDict")] = __import__("collections").OrderedDict
    return allowed


class _MetadataUnpickler(pickle.Unpickler):
    allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(f"refused to load {module}.{name}: not part of checkpoint metadata") from None


def load_metadata(path: str | Path) -> dcp_metadata.Metadata:
    """Unpickle a DCP ``.metadata`` file, admitting only metadata classes."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{path}: {exc} (the file was not written by torch.distributed.checkpoint; "
                                    "it may be malicious, and nothing in it was run)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UnsafeCheckpointError(f"{path}: not readable as checkpoint metadata ({exc})") from None
    if not isinstance(metadata, dcp_metadata.Metadata):
        raise UnsafeCheckpointError(f"{path}: holds a {type(metadata).__name__}, not checkpoint metadata")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose metadata is read by ``load_metadata`` (tensor data is already read by
    ``torch.load(weights_only=True)`` in DCP itself)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        rank = kwargs.get("rank")
        metadata = load_metadata(Path(self._get_metadata_path(rank)))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """``DefaultLoadPlanner`` that reads non-tensor entries with ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UnsafeCheckpointError(f"entry {read_item.dest_index.fqn!r}: refused to unpickle it "
                                        f"({str(exc).splitlines()[0]}); nothing in it was run") from None
        fqn = read_item.dest_index.fqn
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], loaded)
        else:
            self.state_dict[fqn] = loaded


def load(state: dict[str, Any], path: str | Path) -> None:
    """``dcp.load(state, checkpoint_id=path)`` with the safe reader and planner (with or without a process group).
    A refused file raises ``UnsafeCheckpointError`` naming it, on every rank that read it."""
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    # Checked here first: inside dcp.load a failure is reduced to a string and logged with a traceback.
    load_metadata(path / ".metadata")
    try:
        dcp.load(state, storage_reader=SafeFileSystemReader(str(path)), planner=SafeLoadPlanner())
    except BaseException as exc:  # DCP gathers per-rank failures into a CheckpointException (a BaseException)
        unsafe = _find_unsafe(exc)
        if unsafe is None:
            raise
        message = str(unsafe)
        raise UnsafeCheckpointError(message if str(path) in message else f"{path}: {message}") from None


def _find_unsafe(exc: BaseException, depth: int = 0) -> UnsafeCheckpointError | None:
    if isinstance(exc, UnsafeCheckpointError):
        return exc
    if depth > 8:
        return None
    for failure in (getattr(exc, "failures", None) or {}).values():  # {rank: (exception, traceback)}
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, BaseException) and (found := _find_unsafe(inner, depth + 1)) is not None:
            return found
    cause = exc.__cause__ or exc.__context__
    return _find_unsafe(cause, depth + 1) if cause is not None else None
