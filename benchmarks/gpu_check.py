"""The GPU check, in one run of a few minutes on a CUDA machine (a session lent an H100/H200 runs this):

1. MFU, tokens/s and peak memory of a 1B-class one-stage finetune (``benchmarks/mfu_gpu.py``: projector + LLM
   trained, vision frozen, bf16 autocast, 2,048-token conversations);
2. bf16 generation: batched greedy decoding of a bf16 copy of a composition against the fp32 model's greedy tokens
   (a 1B-class random-init Llama behind the fake ViT). Rows whose first next-token margin in fp32 is below
   ``--margin`` logits are too close to call in bf16 and are counted, not compared; every other row must give the
   same first token, and the agreement over the first ``--tokens`` tokens is reported.

    python benchmarks/gpu_check.py [--out results.json]    # on a CUDA machine
    python benchmarks/gpu_check.py --tiny                  # the CPU smoke test (CI runs it)

Exit status 1 when the generation check fails. Nothing else in prism needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mfu_gpu  # the benchmark next to this script

GENERATION_LLM = {"kind": "fake-llama", "hidden_size": 2048, "num_layers": 16, "num_heads": 16, "max_length": 512,
                  "initializer_range": 0.02}
TINY_LLM = {"kind": "fake-llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "max_length": 256}


def generation_check(tiny: bool, rows: int, tokens: int, margin: float) -> dict:
    import torch
    from PIL import Image

    from prism_core import generation
    from prism_core.composition import compose
    from prism_core.registry import use_registry
    from prism_core.testing.fakes import fake_registry

    device = torch.device("cpu" if tiny else "cuda")
    with use_registry(fake_registry()):
        vlm = compose(vision={"kind": "fake-vit"}, projector={"kind": "fake-mlp"},
                      llm=TINY_LLM if tiny else GENERATION_LLM, seed=0)
    vlm.eval().to(device)
    prompts = [f"In: What is in picture number {i}? Describe it.\nOut:" for i in range(rows)]
    rng = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(32, 32, 3, generator=rng) * 255).byte().numpy()) for _ in range(rows)]
    pixels = torch.stack([vlm.image_transform(img) for img in images]).to(device)
    with torch.inference_mode():
        fp32 = generation.generate_ids(vlm, pixels, prompts, max_new_tokens=tokens, min_new_tokens=tokens,
                                       do_sample=False)
        prompt_ids = [vlm.tokenizer(p).input_ids for p in prompts]
        logits, spliced = generation._right_padded_forward(vlm, prompt_ids, None, vlm.embed_images(pixels),
                                                           torch.arange(rows, device=device))
        last = generation._last_attended(spliced.attention_mask)
        top2 = logits[torch.arange(rows, device=device), last].float().topk(2, dim=-1).values
        decisive = (top2[:, 0] - top2[:, 1]) >= margin
        vlm.to(dtype=torch.bfloat16)
        bf16 = generation.generate_ids(vlm, pixels.to(torch.bfloat16), prompts, max_new_tokens=tokens,
                                       min_new_tokens=tokens, do_sample=False)
    first_equal = fp32[:, 0] == bf16[:, 0]
    return {
        "rows": rows, "decisive_rows": int(decisive.sum()),
        "first_token_mismatches_on_decisive_rows": int((decisive & ~first_equal).sum()),
        "first_token_agreement_all_rows": float(first_equal.float().mean()),
        f"first_{tokens}_tokens_agreement": float((fp32 == bf16).float().mean()),
        "passed": bool((first_equal | ~decisive).all()) and bool(decisive.any()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small models on CPU: checks that the script works")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--margin", type=float, default=0.5, help="fp32 top-1 margin (logits) a row needs")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args()

    print("== 1. MFU of a one-stage finetune step")
    mfu = mfu_gpu.measure(args.tiny)
    mfu_gpu.report(mfu)
    print("== 2. bf16 batched generation against fp32 greedy")
    gen = generation_check(args.tiny, args.rows, args.tokens, args.margin)
    for key, value in gen.items():
        print(f"  {key:42s}: {value}")
    print("generation check:", "passed" if gen["passed"] else "FAILED")
    if args.out:
        args.out.write_text(json.dumps({"mfu": mfu, "generation": gen}, indent=1) + "\n")
    return 0 if gen["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
