"""Skipped examples of a run, counted over every rank by reason and by file, so nothing is skipped silently.

Under ``on_bad_example = "skip"`` the loader replaces each bad example (``prism_core.data.collate``) and hands it to
the training loop with the batch it was met in. Each step, the counts by reason are summed over the ranks in the
all-reduce that already asks whether any rank was told to stop, and go into the step's metrics
(``skipped_examples``, ``skipped/<reason>``, cumulative). At the end of each epoch (and before each checkpoint) the
ranks' bad examples are gathered: rank 0 says how many were skipped, why and in which files, and the epoch's last
metrics record carries ``skipped/<reason>/<file>``. Entries dropped when the files were read count once, at the
start. The counts are part of the checkpoint, so a resumed run goes on counting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from prism_core.data import SKIP_REASONS, BadExample
from prism_core.train.agree import gather_json

#: Bad examples quoted per epoch report (all of them are counted).
QUOTED = 5


def _reason(bad: BadExample) -> str:
    return bad.reason if bad.reason in SKIP_REASONS else "other"


def _key(bad: BadExample) -> str:
    return f"{_reason(bad)}/{bad.file}"


class SkipTally:
    def __init__(self, strategy: Any, at_load: Sequence[BadExample] = ()) -> None:
        self.strategy = strategy
        self.by_reason: Counter[str] = Counter(_reason(b) for b in at_load)  # every rank holds the global counts
        self.by_file: Counter[str] = Counter(_key(b) for b in at_load)  # up to the last sync
        self.epoch_by_file: Counter[str] = Counter()
        self.epoch_quoted: list[str] = []
        self._local: list[BadExample] = []  # this rank's, since the last sync

    def step(self, skipped: Sequence[BadExample], stop: bool) -> bool:
        """Count this step's bad examples over every rank (collective); True if any rank asked to stop."""
        self._local += skipped
        counts = torch.zeros(1 + len(SKIP_REASONS), dtype=torch.float64, device=self.strategy.device)
        counts[0] = float(stop)
        for bad in skipped:
            counts[1 + SKIP_REASONS.index(_reason(bad))] += 1
        counts = self.strategy.all_reduce_sum(counts).tolist()
        for reason, count in zip(SKIP_REASONS, counts[1:], strict=True):
            if count:
                self.by_reason[reason] += int(count)
        return counts[0] > 0

    def sync(self) -> None:
        """Merge every rank's bad examples since the last sync into the by-file counts (collective)."""
        mine = {"counts": Counter(_key(b) for b in self._local), "quoted": [str(b) for b in self._local[:QUOTED]]}
        self._local = []
        for part in gather_json(self.strategy, mine):
            self.by_file.update(part["counts"])
            self.epoch_by_file.update(part["counts"])
            self.epoch_quoted += part["quoted"][: max(0, QUOTED - len(self.epoch_quoted))]

    def end_epoch(self, epoch: int, step: int) -> str | None:
        """The epoch's report line, or None if nothing was skipped in it (collective); resets the epoch's counts."""
        self.sync()
        if not self.epoch_by_file:
            return None
        total = sum(self.epoch_by_file.values())
        reasons: Counter[str] = Counter()
        files: Counter[str] = Counter()
        for key, count in self.epoch_by_file.items():
            reason, file = key.split("/", 1)
            reasons[reason] += count
            files[file] += count
        line = (f"epoch {epoch} (to step {step}): {total} bad example{'s' if total != 1 else ''} skipped and "
                f"replaced by others of the same modality (on_bad_example = \"skip\"): "
                + ", ".join(f"{n} {r}" for r, n in reasons.most_common())
                + "; by file: " + ", ".join(f"{f} {n}" for f, n in files.most_common())
                + "; e.g. " + "; ".join(self.epoch_quoted))
        self.epoch_by_file, self.epoch_quoted = Counter(), []
        return line

    def metrics(self, *, with_files: bool = False) -> dict[str, float]:
        out = {"skipped_examples": float(sum(self.by_reason.values()))}
        out.update({f"skipped/{reason}": float(n) for reason, n in sorted(self.by_reason.items())})
        if with_files:
            out.update({f"skipped/{key}": float(n) for key, n in sorted(self.by_file.items())})
        return out

    def state_dict(self) -> dict[str, Any]:
        """The global counts (call ``sync`` first: every rank then holds the same)."""
        return {"by_reason": dict(self.by_reason), "by_file": dict(self.by_file),
                "epoch_by_file": dict(self.epoch_by_file), "epoch_quoted": list(self.epoch_quoted)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.by_reason = Counter(state["by_reason"])
        self.by_file = Counter(state["by_file"])
        self.epoch_by_file = Counter(state["epoch_by_file"])
        self.epoch_quoted = list(state["epoch_quoted"])
