"""LLaVA-format conversation files → a map-style ``Dataset``; shared by every data plugin that reads that format.

Two formats:

- ``"chat"`` (LLaVA v1.5 mix665k): ``[{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...]}]``;
  entries without ``image`` are text-only. Labels are built turn by turn from the prompt format.
- ``"caption"`` (LLaVA-Pretrain 558K): the same shape with exactly two turns; as in the original (and the LLaVA
  code it follows) the human prompt is dropped and ``caption + EOS`` is the supervised text after BOS.

Entries are validated when the file is read (structure, roles alternate starting with ``human``, non-empty), so a
bad entry is reported with its file and index before training starts; images are opened when an example is
loaded. Text that is not valid UTF-8 is an entry problem (the file is decoded with ``surrogateescape``, so one bad
byte names its entry instead of failing the whole file). Under ``on_bad_example = "skip"`` bad entries are dropped
at read time and bad images become ``BadExample`` stand-ins the loader replaces; both are counted, never skipped
silently.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prism_core.data import (
    BadExample,
    BadExampleError,
    DataError,
    MissingDataError,
    OnBadExample,
    check_on_bad_example,
)
from prism_core.types import ASSISTANT, HUMAN, IGNORE_INDEX, Example, Turn

log = logging.getLogger(__name__)

Format = Literal["chat", "caption"]


@dataclass(frozen=True)
class Record:
    """One validated entry: where it came from, its image (absolute path or ``None``) and its turns."""

    source: str
    image: Path | None
    turns: tuple[Turn, ...]
    format: Format = "chat"
    extra: dict[str, Any] = field(default_factory=dict)  # other JSON keys (e.g. "question_type")

    @property
    def num_words(self) -> int:
        turns = self.turns[1:] if self.format == "caption" else self.turns
        return sum(len(t.message.split()) for t in turns)


def _entry_problem(entry: Any, fmt: Format) -> str | None:
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    if "image" in entry and not isinstance(entry["image"], str):
        return f"'image' must be a string path, got {type(entry['image']).__name__}"
    turns = entry.get("conversations")
    if not isinstance(turns, list):
        return "missing 'conversations' list" if turns is None else "'conversations' must be a list"
    if not turns:
        return "empty conversation"
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(
            turn.get("value"), str
        ):
            return f"turn {i} must be an object with string 'from' and 'value'"
        expected = HUMAN if i % 2 == 0 else ASSISTANT
        if turn["from"] != expected:
            return f"roles must alternate starting with {HUMAN!r}: turn {i} is {turn['from']!r}, expected {expected!r}"
    if len(turns) % 2:
        return f"conversation ends with a {HUMAN!r} turn: nothing to learn from turn {len(turns) - 1}"
    if fmt == "caption":
        if len(turns) != 2:
            return f"caption entries have exactly 2 turns, got {len(turns)}"
        if "<image>" in turns[1]["value"]:
            return "caption contains an <image> marker"
        if "image" not in entry:
            return "caption entries need an 'image'"
    return None


def load_conversations(
    path: str | Path,
    image_root: str | Path | None,
    *,
    format: Format = "chat",
    on_bad_example: OnBadExample = "error",
    require_image: bool = False,
    verify_images: bool = False,
    label: str | None = None,
) -> tuple[list[Record], list[BadExample]]:
    """Read and validate ``path``: the records, and a ``BadExample`` (reason ``bad-entry``) for each entry skipped.

    ``require_image`` drops text-only entries on purpose (not counted as bad). ``verify_images`` checks that
    every image file exists now rather than when it is first loaded. ``label`` names the file in sources
    (default: its name).
    """
    check_on_bad_example(on_bad_example)
    path = Path(path)
    label = label or path.name
    entries, undecodable = _read_json(path)
    if not isinstance(entries, list):
        raise BadExampleError(f"{path}: expected a JSON list of entries, got {type(entries).__name__}")
    root = Path(image_root) if image_root is not None else path.parent
    records: list[Record] = []
    bad: list[BadExample] = []
    for index, entry in enumerate(entries):
        source = f"{label}#{index}"
        problem = _entry_problem(entry, format) or (_text_problem(entry) if undecodable else None)
        image = None
        if problem is None and "image" in entry:
            image = root / entry["image"]
            if verify_images and not image.is_file():
                problem = f"{image}: missing image file"
        if problem is not None:
            if on_bad_example == "error":
                raise BadExampleError(f"{path} entry {index}: {problem}")
            bad.append(BadExample(source, problem, "bad-entry"))
            continue
        if require_image and image is None:
            continue
        turns = tuple(Turn(t["from"], t["value"]) for t in entry["conversations"])
        extra = {k: v for k, v in entry.items() if k not in ("image", "conversations")}
        records.append(Record(source, image, turns, format, extra))
    if bad:
        log.warning("%s: skipped %d bad entr%s (on_bad_example = \"skip\"): %s", path, len(bad),
                    "y" if len(bad) == 1 else "ies", "; ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else ""))
    return records, bad


#: A lone surrogate: what ``surrogateescape`` makes of a byte that is not UTF-8 (or a JSON ``\\udcXX`` escape).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _read_json(path: Path) -> tuple[Any, bool]:
    """The parsed file, and whether any of its text is not valid UTF-8 (then each entry is checked for it, so the
    message names the entry, and under "skip" only that entry is dropped)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingDataError(f"{path}: annotation file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    text = raw.decode(json.detect_encoding(raw), "surrogateescape")
    try:
        return json.loads(text), _SURROGATE.search(text) is not None
    except json.JSONDecodeError as exc:
        raise BadExampleError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _text_problem(entry: Any) -> str | None:
    """Where an entry holds text that is not valid UTF-8 (bytes the file's encoding cannot decode)."""
    fields = [("'image'", entry.get("image"))] + [
        (f"turn {i} 'value'", turn.get("value")) for i, turn in enumerate(entry.get("conversations") or [])]
    for where, value in fields:
        found = _SURROGATE.search(value) if isinstance(value, str) else None
        if found is not None:
            char = ord(found.group())
            byte = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"lone surrogate U+{char:04X}"
            return f"{where} is not valid UTF-8 text ({byte} at character {found.start()})"
    if _SURROGATE.search(json.dumps(entry, ensure_ascii=False)):
        return "a field is not valid UTF-8 text"
    return None


def load_image(path: Path, source: str) -> Any:
    """The image at ``path`` as RGB, or ``BadExampleError`` naming ``source`` (missing or corrupt file)."""
    from prism_core.images import ImageLoadError
    from prism_core.images import load_image as read_image

    try:
        with read_image(path) as image:
            return image.convert("RGB")
    except ImageLoadError as exc:
        raise BadExampleError(f"{source}: {exc}") from None


class ConversationDataset:
    """Tokenized examples from validated records (see ``load_conversations``); satisfies ``Dataset``.

    ``skipped_at_load`` holds the entries dropped when the files were read (under "skip"); ``bad_examples`` counts
    those plus the examples that failed to load so far in this process (the training loop counts the latter across
    worker processes and ranks, by reason and file, and reports them each epoch). With ``keep_in_memory``
    each example is decoded, transformed and tokenized once and kept (for small sets trained for many epochs,
    where decoding would otherwise cost more than the training step; per process, so best without workers).
    """

    def __init__(
        self,
        records: Sequence[Record],
        *,
        tokenizer: Any,
        prompt_format: Any,
        image_transform: Callable[[Any], Any] | None,
        on_bad_example: OnBadExample = "error",
        bad_at_load: Sequence[BadExample] = (),
        keep_in_memory: bool = False,
    ) -> None:
        self.records = list(records)
        self._kept: dict[int, Example] | None = {} if keep_in_memory else None
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.image_transform = image_transform
        self.on_bad_example = check_on_bad_example(on_bad_example)
        self.skipped_at_load: list[BadExample] = list(bad_at_load)
        self.skipped: list[BadExample] = list(bad_at_load)
        if any(r.image is not None for r in self.records) and image_transform is None:
            raise ValueError("the data has images but no image_transform was given")

    @property
    def bad_examples(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.records)

    def modality_lengths(self) -> list[tuple[bool, int]]:
        """``(has_image, length)``; the length is a word count (a cheap, monotone proxy for tokens: tokenizing
        every conversation up front would take minutes on 665K entries)."""
        return [(r.image is not None, r.num_words) for r in self.records]

    def tokenize(self, record: Record) -> tuple[list[int], list[int]]:
        from prism_core.prompting import ConversationError, tokenize_conversation

        try:
            if record.format == "caption":
                return self._tokenize_caption(record)
            return tokenize_conversation(self.tokenizer, self.prompt_format, record.turns)
        except ConversationError as exc:
            raise BadExampleError(f"{record.source}: {exc}") from None

    def _tokenize_caption(self, record: Record) -> tuple[list[int], list[int]]:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise BadExampleError(f"{record.source}: the tokenizer has no EOS token to end the caption with")
        ids = [*self.tokenizer(record.turns[1].message.strip()).input_ids, eos]
        if ids[0] != self.tokenizer.bos_token_id:
            raise BadExampleError(f"{record.source}: the tokenizer does not start with BOS (BOS contract)")
        return ids, [IGNORE_INDEX, *ids[1:]]

    def __getitem__(self, index: int) -> Example | BadExample:  # type: ignore[override]
        import torch

        if self._kept is not None and index in self._kept:
            return self._kept[index]
        record = self.records[index]
        reason = "bad-image"
        try:
            pixels = None
            if record.image is not None:
                pixels = self.image_transform(load_image(record.image, record.source))  # type: ignore[misc]
            reason = "bad-text"
            ids, labels = self.tokenize(record)
        except BadExampleError as exc:
            if self.on_bad_example == "error":
                raise
            bad = BadExample(record.source, str(exc).removeprefix(f"{record.source}: "), reason)
            self.skipped.append(bad)
            return bad
        example = Example(
            input_ids=torch.tensor(ids, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
            pixel_values=pixels,
            source=record.source,
        )
        if self._kept is not None:
            self._kept[index] = example
        return example
