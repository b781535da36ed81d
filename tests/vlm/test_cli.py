"""``prism generate`` and ``prism chat`` on a saved tiny model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from prism_core.cli.generate import ChatSession, chat_loop
from prism_core.cli.main import main

from .helpers import image


@pytest.fixture
def saved(vlm, tmp_path: Path) -> Path:
    from prism_core import save

    image(0).save(tmp_path / "red.png")
    image(1).save(tmp_path / "green.png")
    return save(vlm, tmp_path / "model")


def test_generate_prints_the_models_answer(vlm, saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", str(saved), "--image", str(saved.parent / "red.png"), "--prompt", "What colour?",
                 "--max-new-tokens", "5", "--device", "cpu"])
    assert code == 0
    expected = vlm.generate(image(0).convert("RGB"), "In: What colour?\nOut:", do_sample=False, max_new_tokens=5,
                            min_length=1)
    assert capsys.readouterr().out.rstrip("\n") == expected


def test_chat_is_multi_turn_and_obeys_commands(vlm, saved: Path) -> None:
    session = ChatSession(vlm, image(0), None, {"do_sample": False, "max_new_tokens": 3})
    script = "\n".join(["hello", "and then?", f"/image {saved.parent / 'green.png'}", "/reset", "/image /nope.png",
                        "again", "/quit", "never sent"]) + "\n"
    out = io.StringIO()
    chat_loop(session, io.StringIO(script), out)
    text = out.getvalue()
    assert "[image" in text and "[new conversation]" in text and "no such file: /nope.png" in text
    # After /image and /reset the conversation holds only the last exchange, about the green image.
    assert session.builder.get_prompt().startswith("In: again\nOut:")
    assert "never sent" not in session.builder.get_prompt()
    assert torch.equal(vlm.image_transform(session.image), vlm.image_transform(image(1).convert("RGB")))


def test_second_turn_sees_the_first(vlm) -> None:
    session = ChatSession(vlm, image(0), None, {"do_sample": False, "max_new_tokens": 3})
    first = session.reply("hello")
    session.reply("more")
    assert session.builder.get_prompt().startswith(f"In: hello\nOut: {first}")
