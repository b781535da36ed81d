"""Sequence packing, the chunked loss and ``compile``, each figure next to its baseline measured in the same run (CPU).

1. Padding and throughput on a length distribution shaped like LLaVA v1.5's mix665k, generated here (its quantiles
   are printed): 6% text-only conversations (ShareGPT-like, long), 94% image examples (576 image tokens plus text:
   70% short VQA-style, 30% multi-turn conversations), every example capped at max_length 2048. Two recipes, both
   global batch 128 with 16 examples per micro-batch:
   - the LLaVA v1.5 recipe on 8 ranks (one micro-batch per rank per step): every rank's micro-batch is run here, one
     after the other, and a step takes as long as its slowest rank (DDP waits for it);
   - one device (8 micro-batches per step, accumulated): a step takes their sum.
   "padded" is today's default (modality-split global batches, length-grouped and dealt to balance the ranks, each
   micro-batch padded to its longest row), "packed" is ``[train] packing = true``: the same global batches, dealt to
   balance every micro-batch's tokens, packed into rows of up to 2048 positions. Padding is counted over a whole
   epoch of 20,000 examples; throughput (supervised tokens / s, forward + backward of each micro-batch as
   ``train_step`` runs it, the optimizer step left out as it costs the same) on the first ``--steps`` steps, padded
   and packed micro-batches interleaved. Model: the tiny fake composition at LLaVA's shapes (a 24×24 patch grid, so
   576 image tokens; fake-llama with hidden size 128, 2 layers, the 260-token byte vocabulary so the output head
   does not dominate as it would not at 7B), fp32.
2. Peak training memory (forward + backward) at vocab 32064, 2 rows of 1024 and of 2048 positions: the loss from
   the hidden states in chunks vs from full ``[B, T, V]`` logits (goal: chunked <= 0.5x). Each in its own process;
   peak RSS growth (``VmHWM``) with a 1 MiB mmap threshold, so RSS follows the live tensors.
3. ``[train] compile = true`` vs eager: the decoder layers and vision block compiled in place (``compile_blocks``):
   the first micro-batch (compilation) and the time per micro-batch after it, on the packed micro-batches of 1.

    python benchmarks/packing.py [--steps 2] [--skip-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LENGTH, IMAGE_SIDE, IMAGE_TOKENS = 2048, 96, 576  # a 96 px image in 4 px patches: 24 × 24 = 576 tokens
MODEL = {"vision": {"kind": "fake-vit", "image_size": IMAGE_SIDE, "patch_size": 4},
         "llm": {"kind": "fake-llama", "hidden_size": 128, "num_layers": 2, "num_heads": 4, "max_length": MAX_LENGTH},
         "projector": {"kind": "fake-mlp"}}


# -- the data -------------------------------------------------------------------------------------------------------
def mix665k_like(count: int, seed: int = 0) -> list[tuple[bool, int, int]]:
    """``(has_image, text tokens, answer tokens)`` per example, shaped like LLaVA mix665k (see the docstring)."""
    rng = random.Random(f"mix665k:{seed}")
    rows = []
    for _ in range(count):
        has_image = rng.random() >= 0.06
        if not has_image:
            text = rng.lognormvariate(6.8, 0.8)  # median ~900
        elif rng.random() < 0.7:
            text = rng.lognormvariate(4.5, 0.6)  # median ~90: a question or a few, short answers
        else:
            text = rng.lognormvariate(5.7, 0.7)  # median ~300: a conversation
        budget = MAX_LENGTH - (IMAGE_TOKENS if has_image else 0)
        text = max(8, min(int(text), budget))
        rows.append((has_image, text, max(1, int(text * rng.uniform(0.15, 0.5)))))
    return rows


class SyntheticDataset:
    """Token ids, labels (the last ``answer`` tokens supervised) and pixels made up per index, deterministically."""

    def __init__(self, rows: list[tuple[bool, int, int]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def modality_lengths(self) -> list[tuple[bool, int]]:
        return [(has_image, text) for has_image, text, _ in self.rows]

    def __getitem__(self, index: int):
        import torch

        from prism_core.types import IGNORE_INDEX, Example

        has_image, text, answer = self.rows[index]
        gen = torch.Generator().manual_seed(index)
        ids = torch.randint(4, 260, (text,), generator=gen)
        ids[0] = 1  # BOS
        labels = ids.clone()
        labels[: text - answer] = IGNORE_INDEX
        pixels = torch.rand(3, IMAGE_SIDE, IMAGE_SIDE, generator=gen) * 2 - 1 if has_image else None
        return Example(ids, labels, pixels, f"synthetic#{index}")


RECIPES = {"8 ranks (LLaVA v1.5)": {"world_size": 8, "global_batch_size": 128, "per_device_batch_size": 16},
           "1 device": {"world_size": 1, "global_batch_size": 128, "per_device_batch_size": 16}}


def _samplers(lengths, recipe, packing):
    from prism_core.data.sampler import ModalityLengthSampler

    return [ModalityLengthSampler(lengths, rank=r, seed=7, image_tokens=IMAGE_TOKENS, packing=packing, **recipe)
            for r in range(recipe["world_size"])]


def _micro_batches(sampler, count=None):
    """This rank's micro-batches (lists of indices), in order."""
    indices = sampler.epoch_indices()
    per = sampler.per_device_batch_size
    batches = [indices[i : i + per] for i in range(0, len(indices), per)]
    return batches if count is None else batches[:count]


def _positions(batch_lengths, packing):
    """Positions the model runs for one micro-batch of these lengths (image tokens included)."""
    from prism_core.data.packing import plan_rows

    if not packing:
        return len(batch_lengths) * max(batch_lengths)
    rows = plan_rows(batch_lengths, MAX_LENGTH)
    return len(rows) * max(sum(batch_lengths[i] for i in row) for row in rows)


def padding_table(rows) -> None:
    lengths = [(has_image, text) for has_image, text, _ in rows]
    size = [text + (IMAGE_TOKENS if has_image else 0) for has_image, text in lengths]
    print("1. a mix665k-shaped length distribution (synthetic), 20,000 examples, max_length 2048")
    for label, values in (("all (image tokens included)", size),
                          ("image examples", [s for s, (h, _) in zip(size, lengths, strict=True) if h]),
                          ("text-only examples", [s for s, (h, _) in zip(size, lengths, strict=True) if not h])):
        q = statistics.quantiles(values, n=100, method="inclusive")
        print(f"   {label:28s} n={len(values):6d}  p10 {q[9]:5.0f}  p25 {q[24]:5.0f}  p50 {q[49]:5.0f}  "
              f"p75 {q[74]:5.0f}  p90 {q[89]:5.0f}  p99 {q[98]:5.0f}  max {max(values):5d}")
    print("   padding fraction over one epoch (share of the positions run that hold no token):")
    for name, recipe in RECIPES.items():
        fractions = []
        for packing in (False, True):
            tokens = positions = 0
            for sampler in _samplers(lengths, recipe, packing):
                for batch in _micro_batches(sampler):
                    tokens += sum(size[i] for i in batch)
                    positions += _positions([size[i] for i in batch], packing)
            fractions.append(1 - tokens / positions)
        print(f"     {name:24s} padded {fractions[0]:6.1%}   packed {fractions[1]:6.1%}")


# -- 1. throughput ------------------------------------------------------------------------------------------------
def _build_model(registry, **llm):
    import torch

    from prism_core.composition import build
    from prism_core.registry import use_registry
    from prism_core.spec import ModelSpec, structure

    with use_registry(registry):
        spec = structure({**MODEL, "llm": {**MODEL["llm"], **llm}}, ModelSpec)
        torch.manual_seed(0)
        model = build(spec)
    model.configure_trainable("finetune")
    model.keep_all_branches_in_graph = True
    return model


def _run(model, batch) -> float:
    from prism_core.train.loop import _forward_kwargs

    started = time.perf_counter()
    out = model(**_forward_kwargs(batch))
    out.loss_sum.backward()
    elapsed = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return elapsed


def throughput(rows, steps: int) -> dict:
    from prism_core.data.collate import Collator
    from prism_core.testing.fakes import fake_registry

    dataset = SyntheticDataset(rows)
    lengths = dataset.modality_lengths()
    model = _build_model(fake_registry())
    collators = {packing: Collator(0, MAX_LENGTH, image_tokens=IMAGE_TOKENS, packing=packing)
                 for packing in (False, True)}
    print(f"   supervised tokens / s, {steps} steps per recipe and mode (forward + backward; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the start)")
    results = {}
    for name, recipe in RECIPES.items():
        plans = {}
        for packing in (False, True):  # micro-batch m of step s, on every rank
            per_step = recipe["global_batch_size"] // (recipe["per_device_batch_size"] * recipe["world_size"])
            streams = [_micro_batches(s, steps * per_step) for s in _samplers(lengths, recipe, packing)]
            plans[packing] = [[stream[s * per_step + m] for stream in streams for m in range(per_step)]
                              for s in range(steps)]
        _run(model, collators[False]([dataset[i] for i in plans[False][0][0]]))  # warm-up
        _run(model, collators[True]([dataset[i] for i in plans[True][0][0]]))
        times = {False: [], True: []}
        tokens = {False: 0, True: 0}
        positions = {False: 0, True: 0}
        for s in range(steps):
            step = {False: [], True: []}
            for m in range(len(plans[False][s])):
                for packing in (False, True):  # interleaved, so load changes hit both alike
                    batch = collators[packing]([dataset[i] for i in plans[packing][s][m]])
                    tokens[packing] += int(((batch.labels[:, 1:] != -100)).sum())
                    width = batch.input_ids.shape[1] + (0 if packing or not batch.multimodal_indices.numel()
                                                        else IMAGE_TOKENS)
                    positions[packing] += batch.input_ids.shape[0] * width
                    step[packing].append(_run(model, batch))
            for packing in (False, True):
                # 8 ranks: the step lasts as long as the slowest rank; 1 device: the micro-batches run in turn.
                times[packing].append(max(step[packing]) if recipe["world_size"] > 1 else sum(step[packing]))
        # Supervised tokens per device-second: 8 ranks share each step's time, one device has it alone.
        rates = {p: tokens[p] / (sum(times[p]) * recipe["world_size"]) for p in (False, True)}
        results[name] = rates
        print(f"     {name:24s} padded {rates[False]:8.0f}   packed {rates[True]:8.0f} supervised tokens/s per "
              f"device   packed/padded {rates[True] / rates[False]:.2f}x   positions run packed/padded "
              f"{positions[True] / positions[False]:.2f}x")
    print("   goal: packed >= 1.5x padded")
    return results


# -- 2. memory ------------------------------------------------------------------------------------------------------
def memory_worker(positions: str, mode: str, out_file: str) -> None:
    """One process: a forward + backward at vocab 32064 of 2 text rows of ``positions``; peak RSS growth."""
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks.memory import PeakRSS
    from prism_core.testing.fakes import fake_registry
    from prism_core.train.loop import _forward_kwargs
    from prism_core.types import IGNORE_INDEX, Batch

    torch.set_num_threads(2)
    model = _build_model(fake_registry(), vocab_size=32064, hidden_size=256, max_length=int(positions))
    length = int(positions)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 260, (2, length), generator=gen)
    ids[:, 0] = 1
    labels = ids.clone()
    labels[:, : length // 2] = IGNORE_INDEX
    batch = Batch(ids, torch.ones_like(ids, dtype=torch.bool), labels, torch.zeros(0, dtype=torch.long), None)
    kwargs = {**_forward_kwargs(batch), "logits": mode == "full"}
    model(**{**kwargs, "input_ids": ids[:, :16], "attention_mask": kwargs["attention_mask"][:, :16],
             "labels": labels[:, :16].clone().fill_(5)}).loss_sum.backward()  # warm-up: kernels, allocator
    model.zero_grad(set_to_none=True)
    with PeakRSS() as peak:
        out = model(**kwargs)
        out.loss_sum.backward()
    Path(out_file).write_text(json.dumps({"peak_mb": peak.growth_mb, "loss": float(out.loss_sum)}))


def memory(tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "OMP_NUM_THREADS": "2"}
    print("2. peak training memory (forward + backward), vocab 32064, 2 rows, fake-llama hidden 256: peak RSS "
          "growth (MiB)")
    results = {}
    for positions in (1024, 2048):
        row = {}
        for mode in ("full", "chunked"):
            out = tmp / f"memory-{positions}-{mode}.json"
            done = subprocess.run([sys.executable, __file__, "--worker", "memory", str(positions), mode, str(out)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode:
                raise SystemExit(f"memory worker failed:\n{done.stderr[-4000:]}")
            row[mode] = json.loads(out.read_text())
        assert abs(row["full"]["loss"] - row["chunked"]["loss"]) <= 1e-4 * abs(row["full"]["loss"])
        logits_mb = 2 * positions * 32064 * 4 / 2**20
        ratio = row["chunked"]["peak_mb"] / row["full"]["peak_mb"]
        results[positions] = ratio
        print(f"   {positions} positions: full logits {row['full']['peak_mb']:7.0f}   chunked "
              f"{row['chunked']['peak_mb']:7.0f}   chunked/full {ratio:.2f}x   (one copy of fp32 [B, T, V] logits: "
              f"{logits_mb:.0f} MiB)")
    print("   goal: chunked <= 0.5x full logits")
    return results


# -- 3. compile -----------------------------------------------------------------------------------------------------
def compile_table(rows, steps: int) -> None:
    from prism_core.data.collate import Collator
    from prism_core.testing.fakes import fake_registry
    from prism_core.train.compilation import compile_blocks

    dataset = SyntheticDataset(rows)
    recipe = RECIPES["8 ranks (LLaVA v1.5)"]
    sampler = _samplers(dataset.modality_lengths(), recipe, True)[0]
    collator = Collator(0, MAX_LENGTH, image_tokens=IMAGE_TOKENS, packing=True)
    batches = [collator([dataset[i] for i in b]) for b in _micro_batches(sampler, 1 + 3 * steps)]
    eager, compiled = _build_model(fake_registry()), _build_model(fake_registry())
    count = compile_blocks(compiled)
    first = _run(compiled, batches[0])  # compiles, once, for dynamic shapes
    first_eager = _run(eager, batches[0])
    times = {"eager": [], "compiled": []}
    for batch in batches[1:]:  # interleaved
        times["eager"].append(_run(eager, batch))
        times["compiled"].append(_run(compiled, batch))
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print(f"3. compile = true ({count} blocks compiled), packed micro-batches of 1: the first took {first:.0f} s "
          f"(eager: {first_eager:.1f} s), then per micro-batch eager {e:.2f} s, compiled {c:.2f} s, compiled/eager "
          f"{c / e:.2f}x (medians of {len(times['eager'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="steps per recipe and mode for the throughput")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        memory_worker(*args.worker[1:])
        return
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tempfile

    import torch

    torch.set_num_threads(2)
    rows = mix665k_like(20_000)
    padding_table(rows)
    throughput(rows, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        memory(Path(tmp))
    if not args.skip_compile:
        compile_table(rows, args.steps)


if __name__ == "__main__":
    main()
