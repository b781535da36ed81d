"""Read back an offline W&B run directory (``RUN_DIR/wandb/offline-run-DATE-ID/run-ID.wandb``): its run record
(id, config) and history rows, in order.

The ``.wandb`` file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-style
log records in 32 KiB blocks, each record a 7-byte header (CRC-32, length, type: full / first / middle / last)
before a piece of a serialised ``wandb.proto.wandb_internal_pb2.Record``. wandb no longer ships a Python reader
(its Go core writes the file), so the tests read it here.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    directory: Path
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # each {"_step": N, metric: value, ...}


def _payloads(data: bytes) -> Iterator[bytes]:
    ident, magic, version = HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"not a W&B transaction log: {data[:7]!r}"
    pos, pending = HEADER.size, b""
    while pos + RECORD_HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER.size:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        pos += RECORD_HEADER.size
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        chunk, pos = data[pos:pos + length], pos + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(directory: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2

    [log_file] = Path(directory).glob("run-*.wandb")
    run = OfflineRun(Path(directory))
    for payload in _payloads(log_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            run.config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            run.history.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                                for item in record.history.item})
    return run


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """Every offline W&B run under ``RUN_DIR/wandb``, oldest first (their directories are named by start time)."""
    return [read_offline_run(d) for d in sorted((Path(run_dir) / "wandb").glob("offline-run-*"))]
