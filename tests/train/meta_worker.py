"""``torchrun ... meta_worker.py SPEC OUT``: build the spec's model on the meta device as training does, let the
strategy shard and materialise it, and write per rank whether every parameter equals a one-process eager build and
how many elements this rank holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from prism_core.composition import build
from prism_core.registry import use_registry
from prism_core.spec import load_spec
from prism_core.train.distributed import unwrap
from prism_core.train.loop import apply_activation_checkpointing, build_parts
from tests.train.toy_run import registry


def main(spec_file: str, out: str) -> None:
    with use_registry(registry()):
        spec = load_spec(spec_file)
        parts = build_parts(spec)
        built_on_meta = all(t.is_meta for t in (*parts.model.parameters(), *parts.model.buffers()))
        strategy = spec.train.strategy.build()
        strategy.setup()
        try:
            if spec.train.activation_checkpointing:  # as the loop does: wrappers rename every layer's parameters
                apply_activation_checkpointing(parts.model)
            model = unwrap(strategy.wrap(parts.model))
            one_process = build(spec.model)
            eager = one_process.state_dict()
            different = [k for k, v in model.state_dict().items()
                         if not torch.equal((v.full_tensor() if hasattr(v, "full_tensor") else v).cpu(), eager[k])]
            local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
            buffers = dict(one_process.named_buffers())
            Path(f"{out}.{strategy.rank}").write_text(json.dumps({
                "built_on_meta": built_on_meta, "different": different, "local": local,
                "total": sum(p.numel() for p in one_process.parameters()),
                "buffers_equal": all(torch.equal(b.cpu(), buffers[n.replace("._checkpoint_wrapped_module", "")])
                                     for n, b in model.named_buffers())}))
        finally:
            strategy.teardown()


if __name__ == "__main__":
    main(*sys.argv[1:])
