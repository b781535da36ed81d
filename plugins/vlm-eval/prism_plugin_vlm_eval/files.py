"""Reading the benchmarks' official files, with errors that name the file, the entry and the field.

Entries are named ``FILE#ENTRY`` (an index, or the key of a JSON object), as prism's data sets name theirs. The one
official file that is a pickle (RefCOCO's ``refs(unc).p``) is read by an unpickler that builds no object other than
lists, dicts, strings and numbers: nothing in the file can run.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prism_core.data import DataError, MissingDataError


def missing(path: Path, kind: str) -> MissingDataError:
    return MissingDataError(f"{path}: not found; `prism data prepare {kind} --root DATA` downloads the {kind} files "
                            f"(docs/evaluation.md says where each goes)")


def read_json(path: Path, kind: str, expect: type | None = None, what: str = "") -> Any:
    """The file's JSON value; with ``expect`` (``list`` or ``dict``) it must be one (of ``what``, said if not)."""
    value = _parse_json(path, kind)
    if expect is not None and not isinstance(value, expect):
        shape = "a list" if expect is list else "an object"
        raise DataError(f"{path}: expected {shape}{' of ' + what if what else ''}, got {type(value).__name__}")
    return value


def json_entries(path: Path, kind: str, expect: type, what: str) -> Iterator[tuple[Any, str, Any]]:
    """``(key, where, entry)`` for each entry of the JSON list (key: its index) or object (key: its key) in
    ``path``; ``where`` is ``path#key``, what errors about the entry name."""
    value = read_json(path, kind, expect, what)
    for key, entry in value.items() if isinstance(value, dict) else enumerate(value):
        yield key, f"{path}#{key}", entry


def _parse_json(path: Path, kind: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise missing(path, kind) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def read_json_lines(path: Path, kind: str) -> list[Any]:
    """One JSON value per non-blank line (POPE's ``.json`` files are JSON lines too)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise missing(path, kind) from None
    values = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: malformed JSON: {exc.msg}") from None
    return values


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object",
               bool: "true or false"}


def field(entry: Any, name: str, expected: type | tuple[type, ...], where: str) -> Any:
    """``entry[name]``, checked to be of the ``expected`` type(s) (an int is a number; a bool is no int)."""
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
    if name not in entry:
        raise DataError(f"{where}: missing field {name!r}")
    value = entry[name]
    types = expected if isinstance(expected, tuple) else (expected,)
    if float in types:
        types = (*types, int)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types if not (t is int and float in types))
        raise DataError(f"{where}: field {name!r} must be {wanted}, got {type(value).__name__} {value!r:.60}")
    return value


def string_list(entry: Any, name: str, where: str) -> list[str]:
    values = field(entry, name, list, where)
    if not values or not all(isinstance(v, str) for v in values):
        raise DataError(f"{where}: field {name!r} must be a non-empty list of strings")
    return values


def answer_strings(entry: Any, where: str) -> list[str]:
    """The human answers of a VQA-style entry: ``answers`` as ``[{"answer": ...}, ...]`` or ``["...", ...]``."""
    answers = field(entry, "answers", list, where)
    out = []
    for i, answer in enumerate(answers):
        value = answer.get("answer") if isinstance(answer, dict) else answer
        if not isinstance(value, str):
            raise DataError(f"{where}: answers[{i}] must be a string or an object with a string 'answer'")
        out.append(value)
    if not out:
        raise DataError(f"{where}: field 'answers' is empty")
    return out


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to build {module}.{name}: the file should hold plain data only")


def read_plain_pickle(path: Path, kind: str) -> Any:
    """A pickle of lists, dicts, strings and numbers (RefCOCO's refs), refusing anything else unrun."""
    try:
        with path.open("rb") as file:
            return _PlainDataUnpickler(file).load()
    except FileNotFoundError:
        raise missing(path, kind) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a pickle of plain data ({exc}); nothing in it was run") from None
