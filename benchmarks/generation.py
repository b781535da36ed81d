"""Generation throughput: 16 (image, prompt) pairs in one batched, KV-cached call vs one at a time (what the
original ``generate_batch`` did), plus the forward+backward step time of a tiny composition.

    python benchmarks/generation.py [--batch 16] [--new-tokens 32] [--repeats 3] [--fakes]

Uses the real tiny presets (siglip-tiny + gelu-mlp + llama-tiny) when installed, else the core test fakes.
Every row generates exactly --new-tokens tokens (min = max) so both sides do the same work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from PIL import Image
from tqdm import tqdm


def build(fakes: bool):
    from prism_core.composition import compose

    if not fakes:
        try:
            vlm = compose(vision="siglip-tiny", projector="gelu-mlp", llm="llama-tiny", seed=0)
            return vlm, "siglip-tiny+gelu-mlp+llama-tiny"
        except Exception as exc:  # plugins missing: fall back to the fakes
            print(f"real tiny presets unavailable ({exc}); using fakes")
    from prism_core.registry import use_registry
    from prism_core.testing.fakes import fake_registry

    with use_registry(fake_registry()):
        return compose(vision="fake-vit-tiny", projector="fake-mlp", llm="fake-llama-tiny", seed=0), "fakes"


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fakes", action="store_true", help="use the core test fakes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: stable on a shared machine, where spinning OpenMP threads "
                             "of a loaded CPU make batched matmuls 10x slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vlm, name = build(args.fakes)
    vlm.eval().requires_grad_(False)
    images = [Image.new("RGB", (64, 48), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)) for i in range(args.batch)]
    questions = ["What colour is the shape?", "How many shapes are there?", "Describe the image.", "Is it a circle?"]
    prompts = [f"In: {questions[i % 4]} ({i})\nOut:" for i in range(args.batch)]
    pixels = torch.stack([vlm.image_transform(img) for img in images])
    kwargs = {"do_sample": False, "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    total_tokens = args.batch * args.new_tokens

    def batched() -> None:
        vlm.generate_batch(pixels, prompts, **kwargs)

    def one_at_a_time() -> None:
        for i in tqdm(range(args.batch), desc="one at a time", leave=False, disable=None):
            vlm.generate_batch(pixels[i : i + 1], prompts[i : i + 1], **kwargs)

    batched()  # warm up
    t_batched = timed(batched, args.repeats)
    t_single = timed(one_at_a_time, args.repeats)
    print(f"model: {name}; torch threads: {torch.get_num_threads()}")
    print(f"generation, {args.batch} prompts x {args.new_tokens} new tokens (median of {args.repeats}):")
    print(f"  one at a time (original): {t_single:8.3f} s  {total_tokens / t_single:9.1f} tok/s")
    print(f"  batched (one call)      : {t_batched:8.3f} s  {total_tokens / t_batched:9.1f} tok/s")
    print(f"  speed-up                : {t_single / t_batched:8.2f}x  (goal >= 8x)")

    # Forward + backward of a finetune step on a mixed micro-batch (half image rows).
    vlm.train()
    vlm.configure_trainable("finetune")
    tok = vlm.tokenizer
    ids = [tok(p + " a red circle</s>").input_ids for p in prompts[:8]]
    width = max(map(len, ids))
    input_ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]).bool()
    labels = input_ids.masked_fill(~mask, -100)
    labels[:, 0] = -100
    image_rows = torch.arange(0, 8, 2)

    def step() -> None:
        vlm.zero_grad(set_to_none=True)
        vlm(input_ids, mask, labels, pixels[image_rows], image_rows).loss.backward()

    step()
    t_step = timed(step, max(args.repeats, 5))
    print(f"forward+backward, finetune stage, batch 8 (4 with images), {width} text tokens: {t_step * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
