"""Memory and time of building on the meta device, each figure next to the old eager path measured in the same run.

1. Peak RSS growth per rank while training the ~106M-parameter composition of ``benchmarks/training.py`` for 3 steps
   on 2 CPU ranks (gloo): FSDP full-shard vs DDP (goal: FSDP <= 0.60x DDP), up to the first step (the model built
   and placed) and over the whole run. "meta": the model is built on the meta device and each rank materialises
   only what it holds; "eager" (the old path): every rank first materialises the whole model with random weights,
   then the strategy shards or replicates it. Modules are imported before measuring (imports are not training
   memory), and each figure is measured twice: with glibc's default allocator, whose dynamic mmap threshold keeps
   freed tensors of up to 32 MiB in a fragmented heap (FSDP's per-unit gather and reduce buffers suffer most), and
   with a fixed 1 MiB threshold, where RSS follows the live tensors.
2. ``prism_core.load`` of an original-layout Prismatic checkpoint (``config.json`` + ``checkpoints/
   latest-checkpoint.pt``, every component in it) of a ~1B composition written here: peak RSS growth vs the file's
   size (goal <= 1.3x) and wall time vs reading the file (goal <= 2x), with every page of every weight touched after
   loading (a memory-mapped load that is never read would flatter both). The old path: an eager build with random
   weights, then ``load_state_dict`` copies the checkpoint in.
3. Build time of the 49 released models' training recipes on the meta device.

Peak RSS is the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` after imports), in
MiB. Linux only. The checkpoint of part 2 is fp32, about 4 GiB; ``--llm-layers`` scales it.

    python benchmarks/memory.py [--llm-layers 20] [--skip-training]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parents[1]
LLM_1B = {"hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632}


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakRSS:
    """``with PeakRSS() as peak:`` … ``peak.growth_mb``: high-water mark of the block minus the RSS before it."""

    def __enter__(self) -> PeakRSS:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.start = _status_mb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth_mb = _status_mb("VmHWM") - self.start


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def _run_worker(*args: str, nproc: int = 1, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, __file__, "--worker", *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *cmd[1:]]
    out = subprocess.run(cmd, env={**_env(), **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    if out.returncode:
        raise SystemExit(f"worker {' '.join(args)} failed:\n{out.stderr[-4000:]}")


# -- 1. training memory per rank ------------------------------------------------------------------------------
#: glibc's default (a dynamic mmap threshold: freed tensors of up to 32 MiB stay in the heap, fragmented), then a
#: fixed 1 MiB threshold (freed tensors go back to the OS at once, so RSS follows the live tensors).
ALLOCATORS = {"glibc malloc, defaults": {}, "MALLOC_MMAP_THRESHOLD_=1 MiB": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}


def train_worker(spec_file: str, path: str, out_file: str) -> None:
    """One rank: train the spec with the toy registry; write the peak-RSS growth up to the first step (the model
    built and placed) and over the whole run, as JSON."""
    sys.path.insert(0, str(REPO))
    import importlib

    for module in ("torch.distributed.checkpoint", "torch.distributed.fsdp", "torch.nn.parallel",
                   "prism_core.data.collate"):
        importlib.import_module(module)  # up front: module imports are not training memory
    from prism_core.composition import build
    from prism_core.hooks import get_plugin_manager, hookimpl
    from prism_core.materialize import materialize
    from prism_core.registry import use_registry
    from prism_core.spec import load_spec
    from prism_core.train.loop import build_parts, train
    from tests.train.toy_run import registry

    params, marks = {}, {}

    def parts(spec):
        built = build_parts(spec)
        built.save_model = None  # no consolidated export: its gathered copy is not training memory
        if path == "eager":
            materialize(built.model)  # the old path: the whole model, with random weights, on every rank
        params["n"] = sum(t.numel() for t in built.model.parameters())
        return built

    class FirstStep:
        @hookimpl
        def prism_before_train_step(self, step: int, batch: object) -> None:
            marks.setdefault("placed", _status_mb("VmHWM"))

        @hookimpl
        def prism_after_train_step(self, step: int, metrics: object) -> None:
            marks.setdefault("steps", []).append(_status_mb("VmHWM"))  # where in the run the peak is reached

    get_plugin_manager().register(FirstStep())
    with use_registry(registry()):
        spec = load_spec(spec_file)
        build(spec.model, device="meta")  # imports every module the model needs
        spec.train.strategy.build()
        with PeakRSS() as peak:
            train(spec, parts_factory=parts)
    rank = int(os.environ.get("RANK", 0))
    Path(f"{out_file}.{rank}").write_text(json.dumps({"params": params["n"], "run_mb": peak.growth_mb,
                                                      "placed_mb": marks["placed"] - peak.start,
                                                      "steps_mb": [m - peak.start for m in marks["steps"]]}))


def training_memory(tmp: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.training import BIG_MODEL
    from tests.train.toy_run import spec_toml

    rows, params = {}, 0
    for allocator, env in ALLOCATORS.items():
        for path in ("eager", "meta"):
            for kind, strategy in (("ddp", {"kind": "ddp"}), ("fsdp", {"kind": "fsdp", "sharding": "full-shard"})):
                name = f"{kind}-{path}-{len(rows)}"
                spec = tmp / f"{name}.toml"
                spec.write_text(spec_toml(str(tmp / "runs"), run_name=name, model=BIG_MODEL, save_every=None,
                                          trackers=["jsonl"], strategy=strategy, max_steps=3, global_batch_size=4,
                                          per_device_batch_size=2))
                out = tmp / f"{name}.json"
                _run_worker("train", str(spec), path, str(out), nproc=2, env=env)
                ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
                rows[(allocator, path, kind)] = {k: max(r[k] for r in ranks) for k in ("placed_mb", "run_mb")}
                per_rank = [r["steps_mb"] for r in ranks]
                rows[(allocator, path, kind)]["steps_mb"] = [max(s) for s in zip(*per_rank, strict=True)]
                params = ranks[0]["params"]
    print(f"1. {params / 1e6:.0f}M-parameter composition, 2 ranks, 3 steps: peak RSS growth per rank (MiB; modules "
          "imported beforehand)")
    print(f"   {'':28s}{'model built and placed':>30s}{'whole run':>30s}")
    print(f"   {'':28s}{'DDP':>10s}{'FSDP':>10s}{'FSDP/DDP':>10s}{'DDP':>10s}{'FSDP':>10s}{'FSDP/DDP':>10s}")
    for allocator in ALLOCATORS:
        print(f"   {allocator}:")
        for path, label in (("eager", "eager (old path)"), ("meta", "meta (now)")):
            ddp, fsdp = rows[(allocator, path, "ddp")], rows[(allocator, path, "fsdp")]
            cells = "".join(f"{ddp[k]:10.0f}{fsdp[k]:10.0f}{fsdp[k] / ddp[k]:9.2f}x" for k in ("placed_mb", "run_mb"))
            print(f"     {label:26s}{cells}")
    print("   peak so far after each step, meta path (MiB, the larger rank): where the whole-run peak forms")
    for allocator in ALLOCATORS:
        for kind in ("ddp", "fsdp"):
            steps = rows[(allocator, "meta", kind)]["steps_mb"]
            print(f"     {allocator:30s} {kind:5s}" + "".join(f"{m:8.0f}" for m in steps))
    state = 16 * params / 2**20  # fp32 weights and gradients, AdamW's two moments
    print(f"   the training state (16 bytes a parameter) per rank: DDP {state:.0f} MiB, FSDP {state / 2:.0f} MiB "
          "(0.50x); activations and collective buffers come on top of both, so 0.50x is the floor at 2 ranks")
    print("   goal: FSDP/DDP <= 0.60x over the whole run, with the meta path")


# -- 2. loading an original checkpoint -------------------------------------------------------------------------
def _bench_registry():
    """The installed plugins plus a ~1B Llama preset (the tiny shipped tokenizer, no download)."""
    import attrs
    from prism_plugin_llama2.spec import Llama2Spec

    from prism_core.registry import Registry

    @attrs.frozen(kw_only=True)
    class BenchLlamaSpec(Llama2Spec):
        kind: ClassVar[str] = "bench-llama"
        presets: ClassVar[dict[str, dict]] = {"bench-llama-1b": {**Llama2Spec.presets["llama-tiny"], **LLM_1B,
                                      "num_hidden_layers": int(os.environ["PRISM_BENCH_LLM_LAYERS"])}}

    registry = Registry()
    registry.register(BenchLlamaSpec, distribution="benchmarks", version="0")
    return registry


CONFIG = {"model": {"model_id": "bench+1b", "vision_backbone_id": "vit-tiny", "llm_backbone_id": "bench-llama-1b",
                    "arch_specifier": "no-align+gelu-mlp", "image_resize_strategy": "resize-naive",
                    "llm_max_length": 2048}, "stage": "finetune"}


def write_checkpoint_worker(run_dir: str) -> None:
    """An original-layout run directory: every component, keys as the original saved them."""
    import torch
    from prism_plugin_prismatic.original import model_spec_from_config

    from prism_core.composition import build
    from prism_core.registry import use_registry

    root = Path(run_dir)
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(CONFIG))
    with use_registry(_bench_registry()):
        vlm = build(model_spec_from_config(CONFIG["model"]))
    causal_lm = vlm.llm_backbone.llm
    model = {"projector": vlm.projector.state_dict(),
             "llm_backbone": {f"llm.{k}": v for k, v in causal_lm.state_dict().items()},
             "vision_backbone": {f"featurizer.{k}": v for k, v in vlm.vision_backbone.featurizer.state_dict().items()}}
    torch.save({"model": model}, root / "checkpoints" / "latest-checkpoint.pt")


def load_worker(run_dir: str, path: str, out_file: str) -> None:
    """Load the run directory the new way (``prism_core.load``) or the old one; touch every weight; time it."""
    import torch
    from prism_plugin_prismatic.original import map_checkpoint, model_spec_from_config, read_checkpoint

    import prism_core
    from prism_core.composition import build
    from prism_core.registry import use_registry

    checkpoint = Path(run_dir) / "checkpoints" / "latest-checkpoint.pt"
    with use_registry(_bench_registry()):
        spec = model_spec_from_config(CONFIG["model"])
        build(spec, device="meta")  # first use imports every plugin module: not part of either path's cost
        with PeakRSS() as peak:
            started = time.perf_counter()
            if path == "meta":
                vlm = prism_core.load(run_dir)
            else:  # the old load_prismatic: eager random build, then copy each component's weights in
                vlm = build(spec)
                for attribute, tensors in map_checkpoint(vlm, read_checkpoint(checkpoint)).items():
                    getattr(vlm, attribute).load_state_dict(tensors, strict=True)
                vlm.requires_grad_(False).eval()
            loaded = time.perf_counter()
            with torch.no_grad():  # one value per 4 KiB page: every page of every weight is read once
                checksum = sum(float(p.reshape(-1)[::1024].double().sum()) for p in vlm.parameters())
            touched = time.perf_counter()
    Path(out_file).write_text(json.dumps({"growth_mb": peak.growth_mb, "load_s": loaded - started,
                                          "load_and_touch_s": touched - started, "checksum": checksum}))


def read_worker(file: str, out_file: str) -> None:
    """Reading the file alone, through a 64 MiB buffer."""
    buffer = bytearray(64 << 20)
    view = memoryview(buffer)
    started = time.perf_counter()
    with open(file, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
    Path(out_file).write_text(json.dumps({"read_s": time.perf_counter() - started}))


def loading(tmp: Path, layers: int) -> dict[str, float]:
    os.environ["PRISM_BENCH_LLM_LAYERS"] = str(layers)
    run_dir = tmp / "original-run"
    _run_worker("write", str(run_dir))
    file = run_dir / "checkpoints" / "latest-checkpoint.pt"
    size_mb = file.stat().st_size / 2**20
    _run_worker("read", str(file), str(tmp / "warm.json"))  # the page cache holds the file from here on

    def measured(*args: str) -> dict:
        out = tmp / "result.json"
        _run_worker(*args, str(out))
        return json.loads(out.read_text())

    results = {"eager": measured("load", str(run_dir), "eager"), "meta": measured("load", str(run_dir), "meta")}
    results["read"] = min(measured("read", str(file))["read_s"] for _ in range(2))
    read_s = results["read"]
    print(f"2. prism_core.load of an original checkpoint, {size_mb / 1024:.2f} GiB (fp32, page cache warm); reading "
          f"the file alone: {read_s:.2f} s")
    for name, label in (("eager", "eager (old path)"), ("meta", "meta (now)      ")):
        r = results[name]
        print(f"   {label}: peak RSS growth {r['growth_mb']:7.0f} MiB = {r['growth_mb'] / size_mb:.2f}x the file; "
              f"load {r['load_s']:6.2f} s = {r['load_s'] / read_s:.2f}x the read, with every weight touched "
              f"{r['load_and_touch_s']:6.2f} s = {r['load_and_touch_s'] / read_s:.2f}x")
    if abs(results["eager"]["checksum"] - results["meta"]["checksum"]) > 1e-6 * abs(results["eager"]["checksum"]):
        raise SystemExit("the two paths loaded different weights")
    print("   goal (meta): peak RSS <= 1.3x the file, wall time <= 2x the read")
    return results


# -- 3. building every released recipe on meta ----------------------------------------------------------------
def recipes_worker(out_file: str) -> None:
    from prism_plugin_prismatic.catalog import MODELS

    from prism_core.composition import build
    from prism_core.spec import load_spec

    runs = {model_id: load_spec(model_id) for model_id in MODELS}
    build(runs[next(iter(runs))], device="meta")  # imports every plugin module once
    seconds = {}
    for model_id, run in runs.items():
        started = time.perf_counter()
        vlm = build(run, device="meta")
        seconds[model_id] = time.perf_counter() - started
        if not all(t.is_meta for t in (*vlm.parameters(), *vlm.buffers())):
            raise SystemExit(f"{model_id}: not every tensor is on the meta device")
    Path(out_file).write_text(json.dumps(seconds))


def recipes(tmp: Path) -> None:
    out = tmp / "recipes.json"
    _run_worker("recipes", str(out))
    seconds = json.loads(out.read_text())
    slowest = max(seconds, key=seconds.get)
    print(f"3. the {len(seconds)} released recipes built on the meta device: {sum(seconds.values()):.1f} s in all, "
          f"median {statistics.median(seconds.values()):.2f} s, slowest {slowest} {seconds[slowest]:.2f} s")


WORKERS = {"train": train_worker, "write": write_checkpoint_worker, "load": load_worker, "read": read_worker,
           "recipes": recipes_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm-layers", type=int, default=20, help="decoder layers of the ~1B LLM (51M each)")
    parser.add_argument("--skip-training", action="store_true", help="skip part 1 (the slowest)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        WORKERS[args.worker[0]](*args.worker[1:])
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_training:
            training_memory(tmp)
        loading(tmp, args.llm_layers)
        recipes(tmp)


if __name__ == "__main__":
    main()
