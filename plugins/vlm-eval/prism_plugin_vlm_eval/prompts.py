"""The user messages TRI-ML/vlm-evaluation sends a Prismatic model, wrapped by the model's own prompt builder.

Each message is one human turn; ``prompt(vlm, message)`` renders it with ``vlm.get_prompt_builder()`` exactly as
the original harness does (its messages start with a newline, which the prompt formats strip, as the originals
did).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'."


def vqa(question: str) -> str:
    """VQAv2, GQA, TextVQA and POPE: the LLaVA-1.5 short-answer instruction."""
    return f"\n{question}{SHORT_ANSWER}"


def vqa_unanswerable(question: str) -> str:
    """VizWiz: the model is told to say 'Unanswerable' when it cannot tell."""
    return f"\n{question}{UNANSWERABLE}{SHORT_ANSWER}"


def true_false(caption: str) -> str:
    """VSR: is the caption true of the image."""
    return (f'\nBased on the image, is this statement "True" or "False"? {caption}'
            '\nRespond with "True" or "False" directly.')


def letters(count: int) -> list[str]:
    if not 1 <= count <= 26:
        raise ValueError(f"multiple choice needs 1 to 26 options, got {count}")
    return [chr(ord("A") + i) for i in range(count)]


def multiple_choice(question: str, choices: Sequence[str]) -> str:
    """TallyQA and AI2D: the options lettered A, B, ...; the model answers with the letter."""
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters(len(choices)), choices, strict=True))
    return f"\n{question}\n{options}\nAnswer with the option's letter from the given choices directly."


def refer(sentence: str) -> str:
    """RefCOCO, RefCOCO+, RefCOCOg and OCID-Ref: a box for a referring expression."""
    return f'\nPlease provide the bounding box coordinate of the region this sentence describes: "{sentence}"'


def prompt(vlm: Any, message: str) -> str:
    builder = vlm.get_prompt_builder()
    builder.add_turn(role="human", message=message)
    return builder.get_prompt()
