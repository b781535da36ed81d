"""Images/s of the prism featurizer against the original's path: timm's full forward with the last block discarded.

The original called timm's ``get_intermediate_layers`` on the whole ViT, which runs every block and returns the
second-to-last block's output; prism truncates the model after that block. Both run side by side on the same
weights (checked equal first), alternating rounds so machine noise hits both alike.

    python benchmarks/vision_featurizer.py                       # ViT-S/16 at 224 px, random weights, CPU
    python benchmarks/vision_featurizer.py --timm-name vit_base_patch16_siglip_224 --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm
import torch
from prism_plugin_timm_vision.spec import TimmViTSpec
from tqdm import tqdm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm-name", default="vit_small_patch16_224")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per side (medians reported)")
    parser.add_argument("--iters", type=int, default=2, help="forward passes per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the dev box has 2 shared cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    spec = TimmViTSpec(timm_name=args.timm_name, image_size=args.image_size, patch_size=args.patch_size,
                       weights="random", seed=0)
    featurizer = spec.build().to(device, dtype).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # the same initialisation as the featurizer, untruncated
        full = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs()).to(device, dtype).eval()
    depth = len(full.blocks)
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device, dtype=dtype)

    def original() -> torch.Tensor:
        return full.get_intermediate_layers(pixels, n=[depth - 2])[0]

    def prism() -> torch.Tensor:
        return featurizer(pixels)

    with torch.inference_mode():
        torch.testing.assert_close(prism(), original(), rtol=0, atol=0)  # same features, or the timing is moot
        for fn in (original, prism):  # warm-up
            fn()
        times: dict[str, list[float]] = {"original": [], "prism": []}
        for _ in tqdm(range(args.rounds), desc="rounds", leave=False):
            for name, fn in (("original", original), ("prism", prism)):
                _sync(device)
                start = time.perf_counter()
                for _ in range(args.iters):
                    fn()
                _sync(device)
                times[name].append((time.perf_counter() - start) / (args.iters * args.batch))

    rate = {name: 1.0 / statistics.median(values) for name, values in times.items()}
    # Rounds are paired (back to back), so the per-round ratio cancels load from other processes.
    paired = statistics.median(o / p for o, p in zip(times["original"], times["prism"], strict=True))
    params = {"original": _count(full), "prism": _count(featurizer)}
    print(f"model {spec.timm_name} @ {args.image_size}px, {depth} blocks, batch {args.batch}, {args.dtype}, "
          f"device {device} ({torch.get_num_threads()} threads)")
    print(f"{'':38}{'images/s':>10}{'params (M)':>12}")
    print(f"{'timm full forward + discard (original)':38}{rate['original']:>10.1f}{params['original'] / 1e6:>12.2f}")
    print(f"{'prism featurizer (no last block)':38}{rate['prism']:>10.1f}{params['prism'] / 1e6:>12.2f}")
    print(f"speed-up {paired:.3f}x, median of paired rounds (ideal ≈ {depth}/{depth - 1} = {depth / (depth - 1):.3f}x "
          f"from blocks alone); parameters {params['prism'] / params['original']:.3f}x")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


if __name__ == "__main__":
    main()
