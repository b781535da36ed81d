"""Image tokens per image, train step time and generation tokens/s: ``pixel-shuffle-mlp`` (ratio 2) against
``gelu-mlp``, side by side in one run, on two compositions of the real tiny stack (siglip-tiny + llama-tiny, ``pure``
format): the quickstart's (40 px in 8 px patches: a 5 × 5 grid, which the shuffle pads to 6 × 6) and 224 px in
16 px patches (14 × 14).

- train step: forward, backward and AdamW step of one full-finetune micro-batch of 32 image rows (quickstart-like
  questions and answers, fp32), collated by prism's ``Collator`` with the model's image-token count;
- generation: 16 (image, prompt) pairs, one batched, KV-cached greedy call, exactly ``--new-tokens`` tokens each.

Each measurement is repeated ``--repeats`` times, the two projectors alternating, and the median is reported.

    python benchmarks/projectors.py [--repeats 5] [--new-tokens 16] [--threads 1]
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

COMPOSITIONS = {"quickstart: 40 px, patch 8": {"image_size": 40, "patch_size": 8},
                "224 px, patch 16": {"image_size": 224, "patch_size": 16}}
PROJECTORS = {"gelu-mlp": {"kind": "gelu-mlp"},
              "pixel-shuffle-mlp r=2": {"kind": "pixel-shuffle-mlp", "ratio": 2, "pad_grid": True}}
QUESTIONS = [("What colour is the shape?", "red"), ("What shape is in the image?", "circle"),
             ("Is there a blue square in the image?", "no")]


def build(vision: dict, projector: dict):
    from prism_core.composition import compose

    return compose(vision={"kind": "siglip", "preset": "siglip-tiny", **vision}, projector=projector,
                   llm="llama-tiny", prompt_format={"kind": "pure"}, seed=0)


def images(count: int, size: int) -> list[Image.Image]:
    out = []
    for i in range(count):
        img = Image.new("RGB", (size, size), (255, 255, 255))
        quarter = size // 4
        img.paste(((53 * i) % 256, (97 * i) % 256, (151 * i) % 256), (quarter, quarter, 3 * quarter, 3 * quarter))
        out.append(img)
    return out


def train_batch(vlm, count: int):
    from prism_core.data.collate import Collator
    from prism_core.prompting import tokenize_conversation
    from prism_core.types import Example, Turn

    examples = []
    for i, img in enumerate(images(count, vlm.vision_backbone.image_size)):
        question, answer = QUESTIONS[i % len(QUESTIONS)]
        ids, labels = tokenize_conversation(vlm.tokenizer, vlm.prompt_format,
                                            [Turn("human", f"<image>\n{question}"), Turn("gpt", answer)])
        examples.append(Example(torch.tensor(ids), torch.tensor(labels), vlm.image_transform(img), f"bench#{i}"))
    return Collator(vlm.tokenizer.pad_token_id, 2048, image_tokens=vlm.num_image_tokens)(examples)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="image rows per train step")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per generation call")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {os.getloadavg()[0]:.2f}")

    for composition, vision in COMPOSITIONS.items():
        models, steps, generations, rows = {}, {}, {}, {}
        for name, projector in PROJECTORS.items():
            vlm = build(vision, projector)
            batch = train_batch(vlm, args.batch)
            vlm.train()
            vlm.configure_trainable("full-finetune")
            optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-3)

            def step(vlm=vlm, batch=batch, optimizer=optimizer) -> None:
                vlm.forward_batch(batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            pixels = torch.stack([vlm.image_transform(img) for img in images(args.prompts,
                                                                             vlm.vision_backbone.image_size)])
            prompts = [f"{QUESTIONS[i % len(QUESTIONS)][0]}" for i in range(args.prompts)]
            kwargs = {"do_sample": False, "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}

            def generate(vlm=vlm, pixels=pixels, prompts=prompts, kwargs=kwargs) -> None:
                vlm.eval()
                vlm.generate_batch(pixels, prompts, **kwargs)
                vlm.train()

            step()  # warm up allocators and caches
            generate()
            models[name] = (vlm, step, generate)
            steps[name], generations[name] = [], []
            rows[name] = int(batch.attention_mask[0].sum()) + vlm.num_image_tokens
        for _ in range(args.repeats):  # alternate, so load changes hit both alike
            for name, (_, step, generate) in models.items():
                steps[name].append(timed(step))
                generations[name].append(timed(generate))

        print(f"\n{composition} ({args.batch} image rows per step; {args.prompts} prompts × {args.new_tokens} new "
              f"tokens per generation call; median of {args.repeats})")
        print(f"  {'projector':<24}{'patches':>8}{'tokens':>8}{'row len':>9}{'step ms':>10}{'gen tok/s':>11}")
        for name, (vlm, _, _) in models.items():
            step_ms = statistics.median(steps[name]) * 1e3
            tok_s = args.prompts * args.new_tokens / statistics.median(generations[name])
            print(f"  {name:<24}{vlm.num_patches:>8}{vlm.num_image_tokens:>8}{rows[name]:>9}{step_ms:>10.1f}"
                  f"{tok_s:>11.1f}")
        base, shuffled = (statistics.median(steps[n]) for n in PROJECTORS)
        gen_base, gen_shuffled = (statistics.median(generations[n]) for n in PROJECTORS)
        first, second = (models[n][0].num_image_tokens for n in PROJECTORS)
        print(f"  pixel shuffle / gelu-mlp: {second / first:.2f}x image tokens, {shuffled / base:.2f}x step time, "
              f"{gen_base / gen_shuffled:.2f}x generation tokens/s")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
