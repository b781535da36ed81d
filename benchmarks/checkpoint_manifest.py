"""What the checkpoint manifest costs: one process saving an unsharded checkpoint of a model-and-optimizer-sized state,
with and without hashing its files, and ``verify`` (what a resume adds before loading) against the load itself.

The ranks share the hashing (each hashes a share of the files, largest first to the least loaded), so on N ranks
the manifest's wall time is about the single-process figure divided by N (less for one very large file).

    python benchmarks/checkpoint_manifest.py --megabytes 512 --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prism_core.train import checkpoint as ckpt


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256, help="size of the model state (the optimizer: twice)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.megabytes * 2**20 // 4
    model = {f"layer{i}.weight": torch.randn(n // 16) for i in range(16)}
    optimizer = {f"state.{i}.{m}": torch.randn(n // 16) for i in range(16) for m in ("exp_avg", "exp_avg_sq")}
    root = Path(tempfile.mkdtemp())
    try:
        def write() -> None:
            save_file(model, str(root / "model.safetensors"))
            save_file(optimizer, str(root / "optimizer.safetensors"))

        def manifest() -> None:
            for name in ("model.safetensors", "optimizer.safetensors"):
                ckpt._sha256(root / name)

        def load() -> None:  # every byte read (safetensors maps the file; a resume copies it into the model)
            for name in ("model.safetensors", "optimizer.safetensors"):
                for tensor in load_file(str(root / name)).values():
                    tensor.clone()

        write_s = best(write, args.repeats)
        hash_s = best(manifest, args.repeats)
        load_s = best(load, args.repeats)
        total = sum(p.stat().st_size for p in root.iterdir())
        print(f"checkpoint: {total / 1e9:.2f} GB in 2 files (one process, page cache warm)")
        print(f"write {write_s:.2f} s, SHA-256 of the files {hash_s:.2f} s ({total / hash_s / 1e9:.2f} GB/s): "
              f"the manifest adds {hash_s / write_s:.2f}x the write time to a save")
        print(f"load {load_s:.2f} s: verify before a resume adds {hash_s / load_s:.2f}x the load time")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
