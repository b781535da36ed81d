"""What tokenizing conversations exactly as generation sees them costs, against the segment-by-segment tokenization
it replaced (which trained every Llama-family run on a stray ``▁`` before each answer).

    python benchmarks/tokenization.py [--conversations 2000] [--format vicuna-v1.5] [--repeats 3]

``tokenize_conversation`` now tokenizes the prompt before each answer and prompt + answer as whole texts, so its
work grows with the square of the number of exchanges; the old way tokenized each segment once. The conversations
are shaped like LLaVA mix665k (most have 1-3 exchanges, a long tail up to 20; answers of 1-120 words), the
tokenizer is the real 32k Llama-style SentencePiece model as LlamaTokenizerFast (prism_core.testing.tokenizers).
Prints conversations/s for both, their ratio, and how many answers the old way preceded by a lone ``▁``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prism_core.prompting import tokenize_conversation
from prism_core.types import IGNORE_INDEX, Turn

WORDS = ["the", "a", "red", "small", "image", "shows", "two", "people", "standing", "near", "large", "blue", "car",
         "street", "building", "window", "tree", "sky", "what", "is", "there", "how", "many", "colour", "left", "right",
         "top", "bottom", "describe", "picture", "detail", "man", "woman", "dog", "cat"]


def conversations(count: int, seed: int = 0) -> list[list[Turn]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        exchanges = min(20, max(1, int(rng.paretovariate(1.6))))
        turns = []
        for k in range(exchanges):
            question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 25))) + "?"
            answer = " ".join(rng.choice(WORDS) for _ in range(min(120, max(1, int(rng.expovariate(1 / 25))))))
            turns += [Turn("human", ("<image>\n" if k == 0 else "") + question), Turn("gpt", answer + ".")]
        out.append(turns)
    return out


def segment_by_segment(tokenizer, prompt_format, turns):
    """The tokenization before the fix: each rendered segment on its own, special tokens on the first."""
    ids, labels = [], []
    for i, segment in enumerate(prompt_format.render(turns)):
        piece = tokenizer(segment.text, add_special_tokens=i == 0).input_ids
        ids += piece
        labels += piece if segment.supervised else [IGNORE_INDEX] * len(piece)
    return ids, labels


def timed(fn, tokenizer, prompt_format, data, repeats: int) -> tuple[float, list]:
    times, results = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        results = [fn(tokenizer, prompt_format, turns) for turns in data]
        times.append(time.perf_counter() - start)
    return statistics.median(times), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--format", default="vicuna-v1.5")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("PRISM_REQUIRE_REAL_TOKENIZERS", "1")
    from prism_core.prompting import PromptBuilder
    from prism_core.testing.tokenizers import real_tokenizer

    tokenizer = real_tokenizer("sentencepiece")
    prompt_format = PromptBuilder.from_kind(args.format).prompt_format
    data = conversations(args.conversations)
    exchanges = sorted(len(t) // 2 for t in data)
    quantiles = {q: exchanges[int(q * (len(exchanges) - 1))] for q in (0.5, 0.9, 0.99, 1.0)}
    print(f"{len(data)} conversations, exchanges per conversation: "
          + ", ".join(f"p{int(q * 100)} {v}" for q, v in quantiles.items()))

    old_time, old = timed(segment_by_segment, tokenizer, prompt_format, data, args.repeats)
    new_time, new = timed(tokenize_conversation, tokenizer, prompt_format, data, args.repeats)
    space = tokenizer.convert_tokens_to_ids("▁")
    stray = sum(ids[i - 1] == space for ids, labels in old for i in range(1, len(ids))
                if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX)
    answers = sum(len(t) // 2 for t in data)
    tokens = sum(len(ids) for ids, _ in new)
    print(f"segment by segment (before): {len(data) / old_time:8.0f} conversations/s  "
          f"({stray} of {answers} answers after a lone '▁')")
    print(f"as generation sees it (now): {len(data) / new_time:8.0f} conversations/s  "
          f"({tokens / new_time:,.0f} tokens/s)")
    print(f"ratio now / before: {old_time / new_time:.2f}x the throughput")


if __name__ == "__main__":
    main()
