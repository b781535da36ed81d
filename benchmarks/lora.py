"""LoRA fine-tuning (``[train.adapter]``, prism-plugin-peft), measured side by side in one run on the CPU.

1. Cost, on the ~106M-parameter composition of ``benchmarks/training.py`` (one process, fp32, 6 steps of 8
   examples in micro-batches of 4): trainable parameters, peak training memory (growth of the peak RSS over the
   run, modules imported beforehand; glibc's default allocator and a fixed 1 MiB mmap threshold, as in
   ``benchmarks/memory.py``) and median step time, of LoRA (r 8 on every linear layer of the LLM, the projector in
   full) against the ``finetune`` stage (projector + LLM in full). Goal: memory <= 0.5x.
2. Learning, not wiring: from a trained quickstart run (``model.init_from``), LoRA on the shapes set's count
   questions (scenes of one to three copies of the asked shape, a question type the quickstart never saw; by
   default no shapes of other kinds, ``--distractors``: with them, the 1M-parameter model's limit is telling small
   shapes apart, which full fine-tuning does not pass either). Reported: the training wall time,
   held-out count accuracy (goal >= 85% within 120 s on 2 cores), colour / shape / presence accuracy on the
   quickstart's own single-shape test split before and after (goal: colour and shape within 2 points), and the
   same split with the adapter switched off (the base's answers: equal logits).

    python benchmarks/lora.py --base runs/quickstart-...          # both parts
    python benchmarks/lora.py --skip-learning                     # part 1 only
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.memory import ALLOCATORS, PeakRSS  # noqa: E402
from benchmarks.training import BIG_MODEL  # noqa: E402

LORA_COST = {"kind": "lora", "r": 8, "alpha": 16.0}
#: The learning run: LoRA alone (nothing trained in full, so switching the adapter off gives the base back); a little
#: of the quickstart's own questions mixed in (replay) so the adapter does not trade them for counting.
LORA_COUNT = {"kind": "lora", "exclude": ["*lm_head*"], "fully_trained": []}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            **(extra or {})}


# -- 1. cost ------------------------------------------------------------------------------------------------------
def cost_worker(spec_file: str, out_file: str) -> None:
    """Train the spec with the toy registry; write trainable parameters, peak-RSS growth and step times."""
    import importlib

    for module in ("prism_core.data.collate", "prism_core.adapters", "prism_plugin_peft.adapter"):
        importlib.import_module(module)  # up front: module imports are not training memory
    from prism_core.composition import build
    from prism_core.registry import use_registry
    from prism_core.spec import load_spec
    from prism_core.train.loop import build_parts, train
    from prism_core.train.trackers import read_metrics
    from tests.train.toy_run import registry

    counts = {}

    def parts(spec):
        built = build_parts(spec)
        built.save_model = None  # no export: not training memory
        return built

    with use_registry(registry()):
        spec = load_spec(spec_file)
        build(spec.model, device="meta")  # imports every module the model needs
        with PeakRSS() as peak:
            result = train(spec, parts_factory=parts)
    records = read_metrics(result.run_dir)
    from safetensors import safe_open

    from prism_core.train import checkpoint as ckpt

    with safe_open(str(ckpt.latest_checkpoint(result.run_dir) / "model.safetensors"), "pt") as f:
        counts["checkpoint_tensors"] = len(list(f.keys()))
    optimizer = json.loads((ckpt.latest_checkpoint(result.run_dir) / "optimizer.json").read_text())
    counts["trainable_names"] = sum(len(g["param_names"]) for g in optimizer["param_groups"])
    trainable, total = _parameter_counts(spec)
    Path(out_file).write_text(json.dumps({"run_mb": peak.growth_mb, "step_s": statistics.median(
        r["step_time_s"] for r in records[2:]), **counts, "trainable": trainable, "total": total}))


def _parameter_counts(spec) -> tuple[int, int]:
    """(trainable, all) parameters of the spec's model as the loop sets it up (built on meta: no memory)."""
    from prism_core.adapters import adapt
    from prism_core.composition import build

    vlm = build(spec.model, device="meta")
    vlm.configure_trainable(spec.train.stage, spec.train.trainable)
    if spec.train.adapter is not None:
        adapt(vlm, spec.train.adapter)
    return sum(p.numel() for p in vlm.parameters() if p.requires_grad), sum(p.numel() for p in vlm.parameters())


def cost(tmp: Path) -> None:
    from tests.train.toy_run import spec_toml

    rows = {}
    for allocator, env in ALLOCATORS.items():
        for name, extra in (("finetune", {}), ("lora", {"adapter": LORA_COST})):
            run = f"{name}-{len(rows)}"
            spec = tmp / f"{run}.toml"
            spec.write_text(spec_toml(str(tmp / "runs"), run_name=run, model=BIG_MODEL, max_steps=6, save_every=6,
                                      global_batch_size=8, per_device_batch_size=4, **extra))
            out = tmp / f"{run}.json"
            done = subprocess.run([sys.executable, __file__, "--cost-worker", str(spec), str(out)],
                                  env=_env({"OMP_NUM_THREADS": "2", **env}), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            if done.returncode:
                raise SystemExit(f"{run} failed:\n{done.stderr[-4000:]}")
            rows[(allocator, name)] = json.loads(out.read_text())
    first = rows[(next(iter(ALLOCATORS)), "finetune")]
    lora = rows[(next(iter(ALLOCATORS)), "lora")]
    print(f"1. {first['total'] / 1e6:.0f}M-parameter composition, one process (2 threads), fp32, 6 steps of 8 "
          "examples (micro-batches of 4)")
    print(f"   trainable parameters: finetune {first['trainable'] / 1e6:.1f}M, LoRA r 8 {lora['trainable'] / 1e6:.2f}M"
          f" ({lora['trainable'] / first['trainable']:.3f}x); checkpoint tensors {first['checkpoint_tensors']} vs "
          f"{lora['checkpoint_tensors']}")
    print(f"   {'':34s}{'finetune':>10s}{'LoRA':>10s}{'LoRA/ft':>10s}")
    for allocator in ALLOCATORS:
        ft, lo = rows[(allocator, "finetune")], rows[(allocator, "lora")]
        print(f"   peak RSS growth, MiB ({allocator})"[:37].ljust(37)
              + f"{ft['run_mb']:10.0f}{lo['run_mb']:10.0f}{lo['run_mb'] / ft['run_mb']:9.2f}x")
        print(f"   median step time, s ({allocator})"[:37].ljust(37)
              + f"{ft['step_s']:10.3f}{lo['step_s']:10.3f}{lo['step_s'] / ft['step_s']:9.2f}x")
    print("   goal: LoRA/finetune memory <= 0.5x")


# -- 2. learning -------------------------------------------------------------------------------------------------
def _shapes(base_data, **fields):
    import attrs

    return attrs.evolve(base_data, **fields)


def _accuracy(vlm, data_spec, split: str = "test") -> dict[str, float]:
    from prism_core.evaluation.conversations import evaluate_exact_match

    dataset = data_spec.build(tokenizer=vlm.tokenizer, prompt_format=vlm.prompt_format,
                              image_transform=vlm.image_transform, split=split)
    report = evaluate_exact_match(vlm, dataset, batch_size=200, max_new_tokens=3, blind_control=False,
                                  progress=False)
    return {t: f["accuracy"] for t, f in report["with_image"]["by_type"].items()}


def _batch_logits(vlm, data_spec):
    """Logits of the first 64 single-shape test examples (what "the base answers as before" compares)."""
    import torch

    from prism_core.data.collate import Collator

    dataset = data_spec.build(tokenizer=vlm.tokenizer, prompt_format=vlm.prompt_format,
                              image_transform=vlm.image_transform, split="test")
    batch, _ = Collator(vlm.tokenizer.pad_token_id, 256, image_tokens=vlm.num_image_tokens).collate(
        [dataset[i] for i in range(64)])
    with torch.no_grad():
        return vlm.forward_batch(batch).logits


def learning(base_run: Path, tmp: Path, args: argparse.Namespace) -> None:
    import torch

    import prism_core
    from prism_core.adapters import disabled
    from prism_core.spec import RunSpec, structure, to_dict
    from prism_core.train.loop import train
    from prism_core.train.run_dir import load_run_spec

    base_spec = load_run_spec(base_run)
    single = base_spec.data  # the quickstart's questions: colour, shape, presence on single-shape scenes
    count = _shapes(single, question_types=("count",), question_mix=None, num_train=8000, num_validation=0,
                    num_test=300, count_distractors=args.distractors)
    replay, max_steps = args.replay, args.steps
    mixed = _shapes(single, question_types=("colour", "shape", "presence", "count"),
                    question_mix=(replay, replay, replay, 1.0), num_train=8000, num_validation=0, num_test=300,
                    count_distractors=args.distractors)
    adapter = {**LORA_COUNT, "r": args.rank, "alpha": 2.0 * args.rank, "target": args.target.split(",")}
    base = prism_core.load(base_run)
    before = {**_accuracy(base, single), **_accuracy(base, count)}
    base_logits = _batch_logits(base, single)
    table = to_dict(base_spec)
    table["model"]["init_from"] = str(base_run / "model")
    table["data"] = to_dict(mixed if replay > 0 else count)
    table["train"] = {**table["train"], "stage": "finetune", "max_steps": max_steps, "learning_rate": args.lr,
                      "warmup_ratio": 0.05, "output_dir": str(tmp), "run_name": "lora-count", "save_every": None,
                      "validate_every": None, "stop_when": [], "adapter": adapter}
    table.pop("eval", None)
    spec = structure(table, RunSpec, "benchmark")
    started = time.perf_counter()
    result = train(spec)
    seconds = time.perf_counter() - started
    adapted = prism_core.load(result.run_dir)
    after = {**_accuracy(adapted, single), **_accuracy(adapted, count)}
    with disabled(adapted):
        switched_off = _accuracy(adapted, single)
        off_logits = _batch_logits(adapted, single)
    print(f"\n2. LoRA on count questions from the quickstart run {base_run} ({max_steps} steps of "
          f"{spec.train.global_batch_size}, {f'replay {replay:.2g} of each old type' if replay else 'count only'}, "
          f"LoRA r {args.rank} on {args.target}, lr {args.lr:g}, nothing trained in full)")
    print(f"   training wall time (build, data and export included): {seconds:.0f} s on "
          f"{torch.get_num_threads()} threads (goal <= 120 s)")
    print(f"   {'held-out accuracy':22s}{'start':>9s}{'LoRA':>9s}{'change':>9s}{'adapter off':>13s}")
    for kind in ("count", "colour", "shape", "presence"):
        off = f"{switched_off[kind]:13.1%}" if kind in switched_off else f"{'':13s}"
        print(f"   {kind:22s}{before[kind]:9.1%}{after[kind]:9.1%}{(after[kind] - before[kind]) * 100:+8.1f}p{off}")
    print(f"   adapter off vs the base model: max |logit difference| on 64 test examples "
          f"{(off_logits - base_logits).abs().max().item():.2e}")
    print("   goals: count >= 85%; colour and shape within 2 points of the start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="a trained quickstart run directory (part 2)")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--steps", type=int, default=800, help="LoRA steps of part 2")
    parser.add_argument("--replay", type=float, default=0.1, help="weight of each old question type in part 2")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of part 2's adapter")
    parser.add_argument("--rank", type=int, default=16, help="rank of part 2's adapter")
    parser.add_argument("--target", default="llm.*", help="part 2's target patterns, comma-separated")
    parser.add_argument("--distractors", type=int, default=0,
                        help="most shapes of other kinds in part 2's count scenes (the data's count_distractors; "
                             "with any, telling 10 px shapes apart, not counting, limits the tiny model)")
    parser.add_argument("--cost-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cost_worker:
        cost_worker(*args.cost_worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cost:
            cost(Path(tmp))
        if not args.skip_learning:
            if args.base is None:
                parser.error("part 2 needs --base RUN_DIR (a trained quickstart run), or --skip-learning")
            learning(args.base.resolve(), Path(tmp) / "learning", args)


if __name__ == "__main__":
    main()
