"""Loader throughput vs. what a training step consumes, on the synthetic shapes set.

For each image size: samples/s the data loader delivers (workers decoding PNGs, transforming, collating), and
samples/s the tiny composed VLM's training step (forward + backward + AdamW) consumes at the same size, and their
ratio. The goal is a loader at least 10× faster than the step, so data never stalls training.

    python benchmarks/data_loader.py --sizes 224 384 --workers 2 --batches 30
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def image_transform(size: int):
    mean = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)

    def transform(img):
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size))
        return (torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1) - mean) / 0.5

    return transform


def build_model(size: int):
    from prism_core.composition import compose

    return compose({"kind": "siglip", "preset": "siglip-tiny", "image_size": size, "patch_size": 16},
                   "gelu-mlp", "llama-tiny")


def loader_rate(size: int, workers: int, batches: int, batch_size: int, cache: str, tokenizer, prompt_format) -> float:
    from prism_plugin_shapes.spec import ShapesSpec

    from prism_core.data.collate import Collator, build_dataloader
    from prism_core.data.sampler import ModalityLengthSampler

    spec = ShapesSpec(image_size=size, num_train=batches * batch_size, num_test=8, cache_dir=cache)
    ds = spec.build(tokenizer=tokenizer, prompt_format=prompt_format, image_transform=image_transform(size))
    sampler = ModalityLengthSampler(ds.modality_lengths(), global_batch_size=batch_size,
                                    per_device_batch_size=batch_size, seed=0)
    loader = build_dataloader(ds, collator=Collator(tokenizer.pad_token_id, 128), sampler=sampler,
                              per_device_batch_size=batch_size, num_workers=workers, seed=0)
    it = iter(loader)
    next(it)  # worker start-up is a one-off cost, not throughput
    start, n = time.perf_counter(), 0
    for batch in it:
        n += batch.input_ids.shape[0]
    return n / (time.perf_counter() - start)


def step_rate(model, size: int, steps: int, batch_size: int, tokenizer, prompt_format, cache: str) -> float:
    from prism_plugin_shapes.spec import ShapesSpec

    from prism_core.data.collate import Collator

    spec = ShapesSpec(image_size=size, num_train=batch_size, num_test=8, cache_dir=cache)
    ds = spec.build(tokenizer=tokenizer, prompt_format=prompt_format, image_transform=image_transform(size))
    batch = Collator(tokenizer.pad_token_id, 128)([ds[i] for i in range(batch_size)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()  # the first step warms up allocators and kernels
        loss = model.forward_batch(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 384])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cache = tempfile.mkdtemp(prefix="prism-bench-")
    print(f"{'size':>5} {'loader samples/s':>17} {'step samples/s':>15} {'ratio':>7}")
    for size in args.sizes:
        model = build_model(size)
        tokenizer, prompt_format = model.llm_backbone.tokenizer, model.prompt_format
        rate = loader_rate(size, args.workers, args.batches, args.batch_size, cache, tokenizer, prompt_format)
        consumed = step_rate(model, size, args.steps, args.batch_size, tokenizer, prompt_format, cache)
        print(f"{size:>5} {rate:>17.0f} {consumed:>15.1f} {rate / consumed:>6.1f}×")


if __name__ == "__main__":
    main()
