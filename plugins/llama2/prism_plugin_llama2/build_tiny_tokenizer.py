"""Build the tiny tokenizer shipped with this plugin (``prism_plugin_llama2/tiny_tokenizer/``).

    python -m prism_plugin_llama2.build_tiny_tokenizer [OUTPUT_DIR]

A byte-level BPE trained with the ``tokenizers`` library on a small corpus written here, so the result is
deterministic and needs no download. Properties the tests check:

- byte-level: every string encodes, there is no unknown token;
- at most 2047 entries (918 today) including ``<s>`` (BOS, put in front by the post-processor) and ``</s>`` (EOS);
  the backbone adds ``<PAD>`` when it loads the tokenizer, exactly as for Llama-2, and pads the embeddings to 64;
- every word of ``SINGLE_TOKEN_WORDS`` is one token, with and without a leading space;
- trailing whitespace is dropped (a right-strip normalizer). Prompt formats end human turns with a space
  (``"Out: "``) that ``get_prompt()`` strips at inference; dropping it in training too means the model is trained on
  exactly the token sequence it later generates from (the original's train/inference mismatch, where Llama's lone
  ``"▁"`` token ended training prompts but not inference prompts, cannot happen).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

VOCAB_SIZE = 2047  # + "<PAD>" added at load time = 2048, already a multiple of 64
BOS, EOS = "<s>", "</s>"
DEFAULT_DIR = Path(__file__).parent / "tiny_tokenizer"

COLOURS = [
    "red", "green", "blue", "yellow", "purple", "orange", "cyan", "magenta", "white", "black", "gray", "pink",
    "brown",
]
SHAPES = [
    "circle", "circles", "square", "squares", "triangle", "triangles", "star", "stars", "hexagon", "hexagons",
    "diamond", "diamonds", "cross", "crosses", "pentagon", "pentagons", "ellipse", "ellipses", "rectangle",
    "rectangles", "heart", "hearts",
]
ANSWERS = ["yes", "no", "Yes", "No", "True", "False"]
NUMBERS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "0", "1", "2", "3", "4",
    "5", "6", "7", "8", "9",
]
QUESTION_WORDS = [
    "What", "what", "colour", "color", "shape", "shapes", "is", "the", "of", "there", "a", "an", "in", "image",
    "picture", "this", "How", "how", "many", "are", "Is", "Answer", "answer", "with", "word", "Describe", "describe",
    "and",
]
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
FORMAT_PIECES = ["In", "Out", "USER", "ASSISTANT", "[INST]", "[/INST]", "Input", "Output"]
SINGLE_TOKEN_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(COLOURS + SHAPES + ANSWERS + NUMBERS + QUESTION_WORDS + LETTERS + FORMAT_PIECES)
)

# Pre-tokenization: bracketed tags ("[INST]", "[/INST]") are whole words, digits stand alone, a space sticks to the
# word after it (as in GPT-2), other punctuation groups.
SPLIT_PATTERN = r" ?\[/?[A-Za-z]+\]| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

GENERAL_TEXT = """\
A chat between a curious user and an artificial intelligence assistant.
The assistant gives helpful, detailed, and polite answers to the user's questions.
You are a helpful language and vision assistant.
You are able to understand the visual content that the user provides, and assist the user with a variety of tasks.
Look at the picture and answer the question using a single word or phrase.
The image shows a small object on a plain background near the top left corner.
There is one large shape in the middle of the image and two small ones below it.
Describe the image in detail. The scene contains simple coloured shapes drawn on a canvas.
Count the objects, then say how many there are. Answer with a number.
Which side of the picture is the shape on? It is on the left side, not the right side.
Is the shape bigger than the other one? No, it is smaller.
Please answer briefly: what do you see here, and where is it?
The quick brown fox jumps over the lazy dog while the cat sleeps by the door.
Training a model means showing it many examples until its predictions get better.
Numbers like 10, 25, 100 and 2024 are written with digits; words like seven are spelled out.
Questions end with a question mark? Sentences end with a full stop. Lists use commas, and colons: like this.
Input: a question about the image
Output: a short answer
USER: what is in the picture? ASSISTANT: a shape.
[INST] Describe this image. [/INST] It shows a star.
"""


def corpus() -> Iterator[str]:
    """Lines the BPE learns from: general text, templated questions, and every listed word many times."""
    yield from GENERAL_TEXT.splitlines() * 4
    for i, colour in enumerate(COLOURS):
        for j, shape in enumerate(SHAPES):
            number = NUMBERS[(i + j) % len(NUMBERS)]
            answer = ANSWERS[(i * 3 + j) % len(ANSWERS)]
            yield f"What colour is the {shape}? Answer with one word. {colour}"
            yield f"How many {shape} are there in the image? {number}"
            yield f"Is there a {colour} {shape} in this picture? {answer}"
            yield f"In: Describe the image.\nOut: A {colour} {shape} of size {number}."
    for word in SINGLE_TOKEN_WORDS:
        # Alone on a line: the bare form; after other words: the leading-space form.
        yield from [word] * 40
        yield " ".join([word] * 40)


def build(output_dir: Path = DEFAULT_DIR) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.normalizer = normalizers.Strip(left=False, right=True)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )

    missing = [w for w in SINGLE_TOKEN_WORDS for text in (w, f" {w}")
               if len(tokenizer.encode(text, add_special_tokens=False).ids) != 1]
    if missing:
        raise RuntimeError(f"these words are not single tokens: {missing}")

    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(output_dir / "tokenizer.json"), pretty=True)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "model_max_length": 2048,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    (output_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return output_dir


if __name__ == "__main__":
    out = build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
    print(f"wrote {out}")
