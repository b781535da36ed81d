"""Toy tokenizers, a toy prompt format and a toy image transform, for plugin authors' tests.

Data and LLM plugins need a tokenizer, a prompt format and an image transform to exercise their code, but their
tests should not depend on an LLM or vision plugin, nor on a download. These helpers are built in code:

- ``word_tokenizer(words)``: a word-level ``PreTrainedTokenizerFast`` over ``words`` (plus punctuation) that
  prepends ``<s>``; special tokens ``<pad>``, ``<unk>``, ``<s>``, ``</s>`` take ids 0-3 (``SPECIALS``).
- ``write_byte_tokenizer(directory)``: writes a byte-level ``tokenizer.json`` + ``tokenizer_config.json`` that
  ``AutoTokenizer.from_pretrained(directory)`` loads; every string tokenizes (no unknown tokens).
- ``ToyPromptFormat``: ``USER: … ASSISTANT:`` then ``answer </s>``; satisfies the ``PromptFormat`` protocol.
- ``image_transform(size)``: PIL image → ``[3, size, size]`` float tensor in ``[0, 1]``.

Importing this module is torch-free: tokenizers, transformers, numpy and torch are imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prism_core.types import ASSISTANT, HUMAN, Segment, Turn

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
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


def write_byte_tokenizer(
    directory: Path, *, bos: str = "<s>", eos: str = "</s>", add_bos: bool = True, specials: tuple[str, ...] = ()
) -> Path:
    """256 byte tokens plus ``bos``/``eos``/``specials``; the post-processor prepends BOS when ``add_bos``.

    Writes ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory`` (created if missing) and returns it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(dict.fromkeys([bos, eos, *specials])))
    if add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


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


def image_transform(size: int = 8) -> Callable[[Image.Image], torch.Tensor]:
    """Resize to ``size`` × ``size`` RGB and scale to ``[0, 1]``; a ``[3, size, size]`` float32 tensor."""
    import numpy as np
    import torch

    def transform(img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    return transform
