"""``prism generate MODEL --image PATH --prompt TEXT`` and ``prism chat MODEL`` (an interactive, multi-turn REPL).

MODEL is anything ``prism_core.load`` accepts. Torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

CHAT_HELP = """commands:
  /image PATH    use another image (starts a new conversation)
  /noimage       chat without an image (starts a new conversation)
  /system TEXT   set the system prompt, for formats that have one (starts a new conversation)
  /reset         start a new conversation with the same image
  /quit          leave (also Ctrl-D)
anything else is your next message"""


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved prism model directory, a released model id, or a Hub repo id")
    parser.add_argument("--image", type=Path, help="image file (omit for text-only)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="tokens to generate per answer")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--system-prompt", help="replace the prompt format's system prompt")
    parser.add_argument("--device", default=None, help="e.g. cuda, cpu (default: cuda when available)")
    parser.add_argument("--hf-token", default=None, help="token for gated models (default: HF_TOKEN / stored)")


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser("generate", help="answer one prompt about an image")
    _add_generation_options(gen)
    gen.add_argument("--prompt", required=True, help="the user message")
    gen.set_defaults(func=run_generate)
    chat = subparsers.add_parser("chat", help="chat with a model about an image (multi-turn REPL)")
    _add_generation_options(chat)
    chat.set_defaults(func=run_chat)


def _load(args: argparse.Namespace) -> Any:
    import torch

    from prism_core.io import load

    vlm = load(args.model, hf_token=args.hf_token)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        vlm.to(device, dtype=torch.bfloat16)
    else:
        vlm.to(device)
    return vlm


def _open_image(path: Path) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read image {path}: {exc}") from None


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"do_sample": args.do_sample, "max_new_tokens": args.max_new_tokens, "min_length": 1}
    if args.do_sample:
        kwargs["temperature"] = args.temperature
    return kwargs


def run_generate(args: argparse.Namespace) -> int:
    vlm = _load(args)
    image = None if args.image is None else _open_image(args.image)
    builder = vlm.get_prompt_builder(system_prompt=args.system_prompt)
    builder.add_turn(role="human", message=args.prompt)
    print(vlm.generate(image, builder.get_prompt(), **_generation_kwargs(args)))
    return 0


class ChatSession:
    """The REPL's state: image, system prompt and the prompt builder holding the conversation so far."""

    def __init__(self, vlm: Any, image: Any, system_prompt: str | None, generate_kwargs: dict[str, Any]) -> None:
        self.vlm, self.image, self.system_prompt = vlm, image, system_prompt
        self.generate_kwargs = generate_kwargs
        self.reset()

    def reset(self) -> None:
        self.builder = self.vlm.get_prompt_builder(system_prompt=self.system_prompt)

    def reply(self, message: str) -> str:
        self.builder.add_turn(role="human", message=message)
        answer = self.vlm.generate(self.image, self.builder.get_prompt(), **self.generate_kwargs)
        self.builder.add_turn(role="gpt", message=answer)
        return answer

    def command(self, line: str, out: TextIO) -> bool:
        """Handle a ``/command``; returns False to quit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name == "/quit":
            return False
        if name == "/image":
            if not arg:
                print("usage: /image PATH", file=out)
            elif not Path(arg).is_file():
                print(f"no such file: {arg}", file=out)
            else:
                self.image = _open_image(Path(arg))
                self.reset()
                print(f"[image {arg}; new conversation]", file=out)
        elif name == "/noimage":
            self.image = None
            self.reset()
            print("[no image; new conversation]", file=out)
        elif name == "/system":
            try:
                self.vlm.get_prompt_builder(system_prompt=arg)
            except ValueError as exc:
                print(str(exc), file=out)
            else:
                self.system_prompt = arg
                self.reset()
                print("[system prompt set; new conversation]", file=out)
        elif name == "/reset":
            self.reset()
            print("[new conversation]", file=out)
        else:
            print(CHAT_HELP, file=out)
        return True


def chat_loop(session: ChatSession, stdin: TextIO, out: TextIO) -> None:
    print(CHAT_HELP, file=out)
    while True:
        print(">>> ", end="", file=out, flush=True)
        line = stdin.readline()
        if not line:  # EOF
            print(file=out)
            return
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line, out):
                return
            continue
        try:
            print(session.reply(line), file=out)
        except KeyboardInterrupt:
            print("\n[interrupted]", file=out)


def run_chat(args: argparse.Namespace) -> int:
    vlm = _load(args)
    image = None if args.image is None else _open_image(args.image)
    session = ChatSession(vlm, image, args.system_prompt, _generation_kwargs(args))
    try:
        chat_loop(session, sys.stdin, sys.stdout)
    except KeyboardInterrupt:
        print()
    return 0
