"""Training throughput and memory, side by side.

1. samples/s of the tiny fake composition: one process with 2 threads vs DDP on 2 ranks with 1 thread each
   (equal total threads);
2. peak memory per rank, DDP vs FSDP full-shard, on a ~110M-parameter composition (goal: FSDP <= 0.65x DDP).
   Memory is the growth of the process's peak RSS during training (params, grads, AdamW state, activations),
   measured per rank on CPU with gloo.

    python benchmarks/training.py [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIG_MODEL = {"vision": {"kind": "fake-vit"}, "projector": {"kind": "fake-mlp"},
             "llm": {"kind": "fake-llama", "hidden_size": 1024, "num_layers": 10, "num_heads": 8}}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(spec_file: str, out_file: str) -> None:
    """One rank: train the spec with the toy registry, write samples/s and peak-RSS growth as JSON."""
    sys.path.insert(0, str(REPO))
    import torch

    from prism_core.registry import use_registry
    from prism_core.spec import load_spec
    from prism_core.train.loop import build_parts, train
    from prism_core.train.trackers import read_metrics
    from tests.train.toy_run import registry

    rank = int(os.environ.get("RANK", 0))
    with use_registry(registry()):
        spec = load_spec(spec_file)
        before = _peak_rss_mb()
        params = {}

        def parts(s):
            p = build_parts(s)
            p.save_model = None  # no consolidated export: its gathered copy is not training memory
            params["n"] = sum(t.numel() for t in p.model.parameters())
            return p

        result = train(spec, parts_factory=parts)
    records = read_metrics(result.run_dir)[2:]  # the first steps warm up allocators and caches
    Path(f"{out_file}.{rank}").write_text(json.dumps({
        "rank": rank, "params": params["n"], "threads": torch.get_num_threads(),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in records),
        "rss_growth_mb": _peak_rss_mb() - before,
    }))


def _write_spec(tmp: Path, name: str, **train) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.train.toy_run import spec_toml

    model = train.pop("model", None)
    path = tmp / f"{name}.toml"
    path.write_text(spec_toml(str(tmp / "runs"), run_name=name, model=model, save_every=None, trackers=["jsonl"],
                              **train))
    return path


def _launch(spec: Path, nproc: int, threads: int) -> list[dict]:
    out = spec.with_suffix(".json")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--worker", str(spec), str(out)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *cmd[1:]]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(nproc)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        common = {"max_steps": args.steps, "global_batch_size": 8, "per_device_batch_size": 4}
        one = _launch(_write_spec(tmp, "one", **common), nproc=1, threads=2)[0]
        ddp = _launch(_write_spec(tmp, "ddp", strategy={"kind": "ddp"}, **common), nproc=2, threads=1)
        print(f"tiny composition ({one['params'] / 1e6:.2f}M params), global batch 8, 2 threads in total:")
        print(f"  single process : {one['samples_per_s']:8.1f} samples/s")
        print(f"  DDP, 2 ranks   : {ddp[0]['samples_per_s']:8.1f} samples/s "
              f"({ddp[0]['samples_per_s'] / one['samples_per_s']:.2f}x)")

        big = {"max_steps": 3, "global_batch_size": 4, "per_device_batch_size": 2, "model": BIG_MODEL}
        ddp_mem = _launch(_write_spec(tmp, "ddp-big", strategy={"kind": "ddp"}, **big), nproc=2, threads=1)
        fsdp_mem = _launch(_write_spec(tmp, "fsdp-big", strategy={"kind": "fsdp", "sharding": "full-shard"}, **big),
                           nproc=2, threads=1)
        d = max(r["rss_growth_mb"] for r in ddp_mem)
        f = max(r["rss_growth_mb"] for r in fsdp_mem)
        print(f"{ddp_mem[0]['params'] / 1e6:.0f}M-parameter composition, 2 ranks, peak RSS growth per rank:")
        print(f"  DDP            : {d:8.0f} MiB")
        print(f"  FSDP full-shard: {f:8.0f} MiB ({f / d:.2f}x DDP; goal <= 0.65x)")


if __name__ == "__main__":
    main()
