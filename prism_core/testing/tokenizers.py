"""Real tokenizers for tests, built offline: what tiny toy tokenizers hide (SentencePiece's ``▁`` word prefix,
byte-level BPE's ``Ġ``, BOS added or not) shows up here.

- ``"sentencepiece"``: a Llama-style 32k SentencePiece model as ``LlamaTokenizerFast``, tokenizing as the Llama-2 /
  Vicuña hub tokenizers do (``legacy``: a word after a special token gets its ``▁``);
- ``"sentencepiece-nonlegacy"``: the same model with ``legacy=False`` (the newer transformers default);
- ``"sentencepiece-slow"``: the same model through the ``sentencepiece`` library itself (the "slow" tokenizer);
- ``"byte-bpe"``: a GPT-2/Phi-2-style byte-level BPE trained here from a fixed corpus; it adds no BOS.

The SentencePiece model is ``data/tokenizer.model.v1`` of the ``mistral-common`` wheel (Mistral 7B v0.1's, in
Llama's layout). Only that data file is used, extracted from the wheel by ``nox`` (see ``sentencepiece_model_path``):
installing mistral-common itself would change how transformers loads Mistral tokenizers. The SentencePiece
tokenizers also need the ``sentencepiece`` and ``protobuf`` packages. ``real_tokenizer(name)`` skips the calling
test when something is missing, unless ``PRISM_REQUIRE_REAL_TOKENIZERS=1`` (set by nox and CI): then it fails.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any

TOKENIZERS = ("sentencepiece", "sentencepiece-nonlegacy", "sentencepiece-slow", "byte-bpe")

#: Llama-2's own chat template: a system message goes inside the first ``[INST]``, every exchange opens with BOS
#: text, answers are written `` {answer} </s>``.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' }}"
    "{% if loop.first and system %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)
#: ChatML, as many BPE-tokenizer instruct models use it (the generation prompt ends with a newline), after the
#: BOS text a tokenizer that adds none needs (prism splices the image after it).
CHATML_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Enough varied English, code and punctuation for a BPE of a few thousand merges, with every word of the prompt
# formats, so their templates tokenize the way a real BPE does (multi-character tokens, ``Ġword``).
_CORPUS = """
In: What colour is the shape? Out: red. Input: Describe the image. Output: A small blue circle on the left.
USER: Is there a square? ASSISTANT: yes, there is one square. [INST] How many shapes are there? [/INST] three
A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed,
and polite answers to the user's questions. You are a helpful language and vision assistant. You are able to
understand the visual content that the user provides, and assist the user with a variety of tasks using natural
language. system user assistant <<SYS>> <</SYS>> Answer the question using a single word or phrase.
The quick brown fox jumps over the lazy dog; 12 apples, 3.5 kg, 100% sure! "Quoted" text (with brackets) and
new lines: one, two; three. def main(): return 0  # a comment. When the provided information is insufficient,
respond with 'Unanswerable'. Based on the image, is this statement "True" or "False"? Respond directly.
Please provide the bounding box coordinate of the region this sentence describes: [0.12, 0.34, 0.56, 0.78].
café naïve résumé — emoji 🙂 and tabs\tand spaces  twice. Yes No yes no True False A B C D green yellow purple
"""


def _require(what: str, hint: str) -> None:
    import pytest

    message = f"{what} is not installed ({hint})"
    if os.environ.get("PRISM_REQUIRE_REAL_TOKENIZERS") == "1":
        pytest.fail(message + "; PRISM_REQUIRE_REAL_TOKENIZERS=1 makes this a failure")
    pytest.skip(message)


MODEL_FILE = "tokenizer.model.v1"


def sentencepiece_model_path() -> str:
    """The 32k Llama-style SentencePiece model: ``$PRISM_TEST_SENTENCEPIECE_MODEL``, else
    ``$PRISM_CACHE/test-data/tokenizer.model.v1`` (default ``~/.cache/prism``, where ``nox`` extracts it from the
    mistral-common wheel), else the data file of an installed mistral-common (its modules are never imported)."""
    import importlib.metadata as metadata

    candidates = [os.environ.get("PRISM_TEST_SENTENCEPIECE_MODEL"), str(test_data_dir() / MODEL_FILE)]
    with contextlib.suppress(metadata.PackageNotFoundError):
        installed = metadata.distribution("mistral-common").locate_file(f"mistral_common/data/{MODEL_FILE}")
        candidates.append(str(installed))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    _require(f"the SentencePiece model {MODEL_FILE}",
             f"nox puts it in {test_data_dir()}; or set PRISM_TEST_SENTENCEPIECE_MODEL to mistral-common's "
             f"mistral_common/data/{MODEL_FILE}")
    raise AssertionError("unreachable")


def test_data_dir() -> Path:
    return Path(os.environ.get("PRISM_CACHE") or Path.home() / ".cache" / "prism") / "test-data"


def real_tokenizer(name: str, *, chat_template: bool = False) -> Any:
    """A fresh copy of the named tokenizer (see ``TOKENIZERS``); ``chat_template`` attaches the Llama-2 template
    to the SentencePiece ones and ChatML (with its two special tokens) to the BPE."""
    import copy

    if name not in TOKENIZERS:
        raise ValueError(f"unknown test tokenizer {name!r}; choose from {', '.join(TOKENIZERS)}")
    try:
        import sentencepiece  # noqa: F401  (the SentencePiece tokenizers need it to read the model)
    except ImportError:
        if name != "byte-bpe":
            _require("sentencepiece", "pip install sentencepiece")
    tokenizer = copy.deepcopy(_build(name, chat_template))
    return tokenizer


@functools.cache
def _build(name: str, chat_template: bool) -> Any:
    if name == "byte-bpe":
        tokenizer = _byte_bpe(chat_template)
    else:
        tokenizer = _sentencepiece(name)
        if chat_template:
            tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    return tokenizer


def _sentencepiece(name: str) -> Any:
    model = sentencepiece_model_path()
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if name == "sentencepiece-slow":
        from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

        return SentencePieceBackend(vocab_file=model, special_tokens_pattern="bos", legacy=True, **specials)
    import shutil
    import tempfile

    from transformers import LlamaTokenizerFast

    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(model, os.path.join(directory, "tokenizer.model"))
        return LlamaTokenizerFast.from_pretrained(directory, add_bos_token=True, legacy=name == "sentencepiece",
                                                  from_slow=True, **specials)


def _byte_bpe(chat_template: bool) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", *(["<|im_start|>", "<|im_end|>"] if chat_template else [])]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
