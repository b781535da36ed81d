"""Ranks that fail together: when one rank cannot go on, every rank must stop at the same point, or the others
wait in a collective for a rank that is gone.

``agree(strategy, error)`` is that point (an all-reduce, so also a barrier): the rank that failed raises its own
error, every other rank raises ``OtherRankFailed``, which ``prism-run`` turns into exit 2 without a second message.
"""

from __future__ import annotations

from typing import Any

import torch


class OtherRankFailed(RuntimeError):
    """Another rank failed and said why; this one stops without repeating it."""


def any_rank(strategy: Any, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (collective)."""
    return bool(strategy.all_reduce_sum(torch.tensor([float(flag)], device=strategy.device)).item() > 0)


def agree(strategy: Any, error: BaseException | None) -> None:
    """Raise ``error`` on the rank that has one and ``OtherRankFailed`` on the others; return if none has one."""
    if any_rank(strategy, error is not None):
        if error is not None:
            raise error
        raise OtherRankFailed("stopped: another rank failed (its message says why)")


def gather_json(strategy: Any, obj: Any) -> list[Any]:
    """Every rank's JSON-able ``obj``, in rank order, on every rank (an all-gather made of two all-reduces, for
    the rare small reports: damaged checkpoint files, skipped examples per epoch)."""
    if strategy.world_size == 1:
        return [obj]
    import json

    data = json.dumps(obj).encode("utf-8")
    sizes = torch.zeros(strategy.world_size, dtype=torch.int64, device=strategy.device)
    sizes[strategy.rank] = len(data)
    sizes = strategy.all_reduce_sum(sizes).tolist()
    start = sum(sizes[: strategy.rank])
    buffer = torch.zeros(sum(sizes), dtype=torch.uint8, device=strategy.device)
    buffer[start : start + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(strategy.device)
    raw = bytes(strategy.all_reduce_sum(buffer).cpu().tolist())
    out, offset = [], 0
    for size in sizes:
        out.append(json.loads(raw[offset : offset + size].decode("utf-8")))
        offset += size
    return out
