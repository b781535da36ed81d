"""A word-level tokenizer and a minimal prompt format for data tests (no LLM plugin needed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prism_core.types import ASSISTANT, HUMAN, Segment, Turn

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def word_tokenizer(words: Iterable[str]) -> object:
    """BOS-prepending word-level tokenizer over ``words`` (+ punctuation split), pad/unk/bos/eos special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in sorted(set(words) | set("?.,:!")):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


class ToyPromptFormat:
    """``USER: ... ASSISTANT:`` then ``answer </s>``; satisfies the PromptFormat protocol."""

    kind = "toy"
    system_prompt = None

    def render(self, turns: Sequence[Turn]) -> list[Segment]:
        out = []
        for i, turn in enumerate(turns):
            expected = HUMAN if i % 2 == 0 else ASSISTANT
            if turn.role != expected:
                raise ValueError(f"turn {i}: expected {expected}")
            message = turn.message.replace("<image>", "").strip()
            if turn.role == HUMAN:
                out.append(Segment(f"USER: {message} ASSISTANT:", False))
            else:
                out.append(Segment(f"{message} </s>", True))
        return out

    def prompt(self, turns: Sequence[Turn]) -> str:
        return " ".join(s.text for s in self.render(turns)).rstrip()


def image_transform(size: int = 8):
    import numpy as np
    import torch

    def transform(img):
        arr = np.asarray(img.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    return transform
