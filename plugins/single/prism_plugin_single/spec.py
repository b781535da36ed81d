"""Spec of the single-process strategy (torch-free at import)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import attrs

from prism_core.spec import TrainStrategySpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_single.strategy import SingleStrategy


@attrs.frozen(kw_only=True)
class SingleSpec(TrainStrategySpec):
    """One process, one device: no process group, no wrapping."""

    kind: ClassVar[str] = "single"
    presets: ClassVar[dict[str, dict]] = {"single-cpu": {"device": "cpu"}, "single-auto": {"device": "auto"}}

    device: str = spec_field("auto", help="'auto' (cuda:0 when available, else cpu), 'cpu', 'cuda', 'cuda:N'")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            yield "device", f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"

    def build(self) -> SingleStrategy:
        from prism_plugin_single.strategy import SingleStrategy

        return SingleStrategy(device=self.device)
