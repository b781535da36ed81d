"""MFU of a 1B-class composition on one CUDA device (finishes in a few minutes on an H100).

A random-init Llama-architecture LLM (hidden 2048, 20 layers, ~1.0B parameters) behind the core fake ViT and MLP
projector, trained in the finetune stage (projector + LLM) with bf16 autocast on long synthetic conversations.
MFU is the loop's own estimate (``prism_core.train.flops``: 6·N per token for trainable parts, 4·N for frozen ones
gradients pass through, 2·N for the frozen tower) over the median step after warm-up, against the device's dense
bf16 peak. ``--tiny`` runs a small version on CPU (with a nominal 0.05 TFLOP/s peak) to check the script works.

    python benchmarks/mfu_gpu.py            # on a CUDA machine
    python benchmarks/mfu_gpu.py --tiny     # anywhere
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL = {"llm": {"kind": "fake-llama", "hidden_size": 2048, "num_layers": 20, "num_heads": 16, "max_length": 2048},
        "vision": {"kind": "fake-vit", "image_size": 224, "patch_size": 14, "embed_dim": 1024},
        "projector": {"kind": "fake-mlp"}}
TINY = {"llm": {"kind": "fake-llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "max_length": 512},
        "vision": {"kind": "fake-vit"}, "projector": {"kind": "fake-mlp"}}


def measure(tiny: bool, steps: int | None = None) -> dict:
    """Train the composition for a few steps; MFU, tokens/s and peak memory of the median step after warm-up."""
    sys.path.insert(0, str(REPO))
    import torch

    from prism_core.registry import use_registry
    from prism_core.spec import loads_spec
    from prism_core.train.loop import build_parts, train
    from prism_core.train.trackers import read_metrics
    from tests.train.toy_run import registry, spec_toml

    if not tiny and not torch.cuda.is_available():
        sys.exit("mfu_gpu.py needs CUDA (use --tiny to check it on CPU)")
    steps = steps or (4 if tiny else 30)
    train_table = {"max_steps": steps, "global_batch_size": 8 if tiny else 16,
                   "per_device_batch_size": 4 if tiny else 16, "precision": "bf16",
                   "max_length": 512 if tiny else 2048, "save_every": None, "learning_rate": 2e-5,
                   "strategy": {"kind": "single", "device": "cpu" if tiny else "cuda"}}
    if tiny:
        train_table["peak_tflops"] = 0.05
    data = {"kind": "train-toy", "num_examples": 64 if tiny else 512, "answer_words": 40 if tiny else 300}
    if not tiny:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp, use_registry(registry()):
        spec = loads_spec(spec_toml(tmp, run_name="mfu", model=TINY if tiny else FULL, data=data, **train_table))
        n_params = {}

        def parts(s):
            p = build_parts(s)
            p.save_model = None  # timing only
            n_params["n"] = sum(t.numel() for t in p.model.parameters())
            return p

        started = time.perf_counter()
        train(spec, parts_factory=parts)
        wall = time.perf_counter() - started
        records = read_metrics(Path(tmp) / "mfu")[2:] or read_metrics(Path(tmp) / "mfu")
    return {
        "device": "cpu" if tiny else torch.cuda.get_device_name(),
        "parameters": n_params["n"], "steps": steps, "wall_s": wall,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records),
        "mfu": statistics.median(r["mfu"] for r in records),
        "peak_memory_gib": None if tiny else torch.cuda.max_memory_allocated() / 2**30,
    }


def report(result: dict) -> None:
    print(f"{result['parameters'] / 1e9:.2f}B parameters on {result['device']}, {result['steps']} steps in "
          f"{result['wall_s']:.0f} s")
    print(f"  median tokens/s : {result['tokens_per_s']:,.0f}")
    print(f"  median MFU      : {100 * result['mfu']:.1f}%")
    if result["peak_memory_gib"] is not None:
        print(f"  peak memory     : {result['peak_memory_gib']:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small model on CPU, to check the script")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    report(measure(args.tiny, args.steps))


if __name__ == "__main__":
    main()
