"""Training builds the model on the meta device; the strategy materialises it where it trains. Under FSDP each of
2 ranks holds only its shards, and they are exactly one process's eagerly built weights.

(That FSDP and DDP from meta then train like one process, loss and grad norm within the tolerances of the DDP/FSDP
tests, is ``test_distributed.py::test_two_ranks_match_one_process_with_the_same_global_batch``: its runs take this
path.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from prism_plugin_single.spec import SingleSpec
from prism_plugin_single.strategy import SingleStrategy

from prism_core.materialize import has_meta_tensors
from prism_core.registry import use_registry
from prism_core.spec import loads_spec
from prism_core.train.loop import train
from tests.train.conftest import HERE, REPO, subprocess_env
from tests.train.toy_run import registry, spec_toml

MODEL = {"vision": {"kind": "fake-fused"}, "llm": {"kind": "fake-llama", "num_layers": 3},
         "projector": {"kind": "fake-mlp"}}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(("strategy", "checkpointing"), [({"kind": "fsdp"}, True),
                                                         ({"kind": "fsdp", "sharding": "hybrid"}, False),
                                                         ({"kind": "ddp"}, False)])
def test_each_rank_materialises_its_share_of_the_one_process_weights(tmp_path, strategy, checkpointing):
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_toml(str(tmp_path), model=MODEL, strategy=strategy, activation_checkpointing=checkpointing))
    out = tmp_path / "ranks.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "meta_worker.py"), str(spec), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=subprocess_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    for rank in ranks:
        assert rank["built_on_meta"] and rank["different"] == [] and rank["buffers_equal"]
    total = ranks[0]["total"]
    if strategy["kind"] == "fsdp":  # hybrid too: one node of 2 ranks is a (1 replica × 2 shards) mesh
        assert sum(r["local"] for r in ranks) == total and all(r["local"] < 0.55 * total for r in ranks)
    else:
        assert all(r["local"] == total for r in ranks)


class LegacySingleStrategy(SingleStrategy):
    """A strategy plugin from before meta-device models: its wrap expects real tensors."""

    accepts_meta = False
    wrapped: ClassVar[list[bool]] = []

    def wrap(self, model: Any) -> Any:
        LegacySingleStrategy.wrapped.append(has_meta_tensors(model))
        return model.to(self.device)


@attrs.frozen(kw_only=True)
class LegacySingleSpec(SingleSpec):
    kind: ClassVar[str] = "legacy-single"
    presets: ClassVar[dict[str, dict]] = {}

    def build(self) -> LegacySingleStrategy:
        return LegacySingleStrategy(device="cpu")


def test_a_strategy_without_meta_support_receives_a_materialised_model(tmp_path):
    reg = registry()
    reg.register(LegacySingleSpec, distribution="legacy", version="0")
    with use_registry(reg):
        result = train(loads_spec(spec_toml(str(tmp_path), max_steps=2, strategy={"kind": "legacy-single"})))
    assert result.step == 2 and LegacySingleStrategy.wrapped == [False]
