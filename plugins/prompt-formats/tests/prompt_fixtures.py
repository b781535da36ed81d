"""A minimal byte-level tokenizer written with the ``tokenizers`` library (no download, no training)."""

from __future__ import annotations

import json
from pathlib import Path


def write_byte_tokenizer(
    directory: Path, *, bos: str = "<s>", eos: str = "</s>", add_bos: bool = True, specials: tuple[str, ...] = ()
) -> Path:
    """256 byte tokens plus ``bos``/``eos``/``specials``; the post-processor prepends BOS when ``add_bos``."""
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
