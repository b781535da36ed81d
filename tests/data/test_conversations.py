"""LLaVA-format files: chat and caption labels, and every bad-input case named by file and entry."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from prism_core.data import BadExample, BadExampleError
from prism_core.data.conversations import ConversationDataset, load_conversations
from prism_core.testing.toys import ToyPromptFormat, image_transform, word_tokenizer
from prism_core.types import IGNORE_INDEX

WORDS = ["USER", "ASSISTANT", "what", "is", "this", "a", "cat", "dog", "red", "photo", "of", "describe", "hello", "hi",
         "there"]


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(WORDS)


def write(tmp_path, entries, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(entries))
    return path


def chat(*messages, image=None):
    entry = {"id": "x", "conversations": [{"from": "human" if i % 2 == 0 else "gpt", "value": m}
                                          for i, m in enumerate(messages)]}
    if image:
        entry["image"] = image
    return entry


def build(tmp_path, tokenizer, entries, **kwargs):
    fmt = kwargs.pop("format", "chat")
    on_bad = kwargs.pop("on_bad_example", "error")
    records, bad = load_conversations(write(tmp_path, entries), tmp_path, format=fmt, on_bad_example=on_bad, **kwargs)
    return ConversationDataset(records, tokenizer=tokenizer, prompt_format=ToyPromptFormat(),
                               image_transform=image_transform(), on_bad_example=on_bad, bad_at_load=bad)


def test_chat_labels_supervise_answers_turn_by_turn_and_text_only_has_no_pixels(tmp_path, tokenizer):
    Image.new("RGB", (10, 10), "red").save(tmp_path / "a.png")
    ds = build(tmp_path, tokenizer, [chat("<image>\nwhat is this", "a cat", "red", "dog", image="a.png"),
                                     chat("hello", "hi there")])
    ex = ds[0]
    text = tokenizer.convert_ids_to_tokens(ex.input_ids.tolist())
    supervised = [t for t, lab in zip(text, ex.labels.tolist(), strict=True) if lab != IGNORE_INDEX]
    assert text[0] == "<s>" and ex.labels[0] == IGNORE_INDEX
    assert supervised == ["a", "cat", "</s>", "dog", "</s>"]
    assert ex.pixel_values.shape == (3, 8, 8) and ex.source == "data.json#0"
    assert ds[1].pixel_values is None
    assert ds.modality_lengths() == [(True, 8), (False, 3)]  # whitespace words


def test_caption_format_drops_the_prompt_and_supervises_caption_plus_eos(tmp_path, tokenizer):
    Image.new("RGB", (10, 10), "blue").save(tmp_path / "b.jpg")
    ds = build(tmp_path, tokenizer, [chat("describe <image>", " a photo of a dog ", image="b.jpg")], format="caption")
    ex = ds[0]
    assert tokenizer.convert_ids_to_tokens(ex.input_ids.tolist()) == ["<s>", "a", "photo", "of", "a", "dog", "</s>"]
    assert ex.labels.tolist() == [IGNORE_INDEX, *ex.input_ids.tolist()[1:]]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": 1, "conversations": []}, "empty conversation"),
        ({"id": 1}, "missing 'conversations'"),
        ([1, 2], "expected an object"),
        (chat("a", "b", "c"), "ends with a 'human' turn"),
        ({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}, "roles must alternate"),
        ({"conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "b"}]}, "string 'from' and"),
    ],
)
def test_bad_entries_name_file_and_entry_or_are_counted(tmp_path, tokenizer, entry, message):
    entries = [chat("hello", "hi"), entry]
    with pytest.raises(BadExampleError, match=rf"data\.json entry 1: .*{message}"):
        build(tmp_path, tokenizer, entries)
    ds = build(tmp_path, tokenizer, entries, on_bad_example="skip")
    assert len(ds) == 1 and ds.bad_examples == 1 and str(ds.skipped[0]).startswith("data.json#1:")
    assert ds.skipped_at_load[0].reason == "bad-entry" and ds.skipped_at_load[0].file == "data.json"


def test_malformed_json_names_file_and_position(tmp_path, tokenizer):
    path = tmp_path / "broken.json"
    path.write_text('[{"conversations": [}]')
    with pytest.raises(BadExampleError, match=r"broken\.json: malformed JSON at line 1, column"):
        load_conversations(path, tmp_path)


def test_missing_and_corrupt_images_raise_naming_the_entry_or_become_counted_stand_ins(tmp_path, tokenizer):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    entries = [chat("what", "cat", image="gone.png"), chat("what", "cat", image="corrupt.png")]
    ds = build(tmp_path, tokenizer, entries)
    with pytest.raises(BadExampleError, match=r"data\.json#0: .*gone\.png: missing image file"):
        ds[0]
    with pytest.raises(BadExampleError, match=r"data\.json#1: .*corrupt\.png: corrupt image"):
        ds[1]
    skipping = build(tmp_path, tokenizer, entries, on_bad_example="skip")
    assert isinstance(skipping[0], BadExample) and isinstance(skipping[1], BadExample)
    assert skipping.bad_examples == 2 and {skipping[0].reason, skipping[1].reason} == {"bad-image"}
    with pytest.raises(BadExampleError, match=r"data\.json entry 0: .*gone\.png: missing image file"):
        build(tmp_path, tokenizer, entries, verify_images=True)


def test_require_image_drops_text_only_entries_without_counting_them(tmp_path, tokenizer):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    ds = build(tmp_path, tokenizer, [chat("hello", "hi"), chat("what", "cat", image="a.png")], require_image=True)
    assert len(ds) == 1 and ds.bad_examples == 0 and ds[0].has_image
