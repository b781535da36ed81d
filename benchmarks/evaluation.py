"""Evaluation throughput on the quickstart model: questions per second with one batched model call per batch vs one
example per call (the original harness's loop: its Prismatic ``generate_batch`` answered a batch one example at a
time), through the same evaluation runner, side by side in one run.

    python benchmarks/evaluation.py [--run RUN_DIR] [--train-steps 400] [--batch 64] [--limit 300] [--threads 1]

The task is the quickstart's own evaluation (the shapes test split, ``synthetic-shapes``), measured without and with
the blind control (one greedy generation per question; plus a scoring call and a second generation on a zeroed
image). Without ``--run`` the bundled quickstart spec is trained for ``--train-steps`` steps first, so the model
answers and stops as a trained one does (an untrained one rambles to ``max_new_tokens``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch


def trained_quickstart(steps: int, out: Path) -> Path:
    from prism_core.spec import load_spec
    from prism_core.train.loop import train

    spec = load_spec("quickstart", [f"train.max_steps={steps}", f"train.output_dir={out}", "train.run_name=bench"])
    return train(spec).run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a quickstart run directory (default: train one now)")
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64, help="examples per batched model call")
    parser.add_argument("--limit", type=int, default=300, help="questions evaluated each way")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: stable on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import prism_core
    from prism_core.evaluation import build_tasks, run_task
    from prism_core.spec import to_dict
    from prism_core.train.run_dir import load_run_spec

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or trained_quickstart(args.train_steps, Path(tmp))
        spec = load_run_spec(run_dir)
        vlm = prism_core.load(run_dir)
        print(f"model: {run_dir} (quickstart: siglip-tiny 40 px + gelu-mlp + llama-tiny); torch threads: "
              f"{torch.get_num_threads()}; {args.limit} questions of the shapes test split each way")
        for blind in (False, True):
            [task] = build_tasks([{"kind": "synthetic-shapes", "data": to_dict(spec.data), "blind_control": blind,
                                   "max_new_tokens": spec.eval.max_new_tokens}])
            run_task(vlm, task, batch_size=args.batch, limit=8, progress=False)  # warm up
            timings, outputs = {}, {}
            for name, batch in (("one at a time (original)", 1), (f"batched ({args.batch} per call)", args.batch)):
                started = time.perf_counter()
                result = run_task(vlm, task, batch_size=batch, limit=args.limit, progress=False)
                timings[name] = time.perf_counter() - started
                outputs[name] = [r["output"] for r in result.records]
                accuracy = result.metrics["accuracy"]
            single, batched = timings.values()
            same = sum(a == b for a, b in zip(*outputs.values(), strict=True)) / args.limit
            print(f"\n{'with' if blind else 'without'} the blind control (accuracy {accuracy:.1%}):")
            for name, seconds in timings.items():
                print(f"  {name:<26}{seconds:8.2f} s  {args.limit / seconds:8.1f} questions/s")
            print(f"  speed-up                  {single / batched:8.2f}x   (answers identical: {same:.1%})")


if __name__ == "__main__":
    main()
