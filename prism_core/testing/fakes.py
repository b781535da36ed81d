"""Tiny, fast, real-torch stand-ins for each model role, for core tests that must not depend on plugins.

- ``FakeVisionSpec`` (kind ``fake-vit``): a patchifying conv plus one transformer block; ``[3, H, W]`` transform.
- ``FakeFusedVisionSpec`` (kind ``fake-fused``): two such towers whose features are concatenated; dict transform.
- ``FakeLLMSpec`` (kind ``fake-llama``): a tiny random ``LlamaForCausalLM`` with a byte-level tokenizer built in
  code (``<pad>``, ``<s>``, ``</s>``, ``<unk>`` plus the 256 byte symbols; never an unknown token).
- ``FakeMLPProjectorSpec`` (kind ``fake-mlp``) and ``FakePureFormatSpec`` (kind ``fake-pure``: the original
  ``In: …\\nOut: `` template).

``fake_registry()`` returns a registry holding all of them; use it with ``prism_core.registry.use_registry``.
Spec classes are torch-free; modules are built in ``build()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from prism_core.registry import Registry
from prism_core.spec import (
    LLMBackboneSpec,
    ProjectorSpec,
    PromptFormatSpec,
    VisionBackboneSpec,
    spec_field,
)
from prism_core.types import Segment, Turn


@attrs.frozen(kw_only=True)
class FakeVisionSpec(VisionBackboneSpec):
    kind: ClassVar[str] = "fake-vit"
    presets: ClassVar[dict[str, dict]] = {"fake-vit-tiny": {}}

    image_size: int = spec_field(16, help="square input side in pixels")
    patch_size: int = spec_field(4, help="patch side in pixels")
    embed_dim: int = spec_field(24, help="feature width")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def build(self) -> Any:
        from prism_core.testing._fake_modules import FakeVisionBackbone

        return FakeVisionBackbone(self.image_size, self.patch_size, self.embed_dim)


@attrs.frozen(kw_only=True)
class FakeFusedVisionSpec(VisionBackboneSpec):
    kind: ClassVar[str] = "fake-fused"
    presets: ClassVar[dict[str, dict]] = {"fake-fused-tiny": {}}

    image_size: int = spec_field(16, help="square input side in pixels")
    patch_size: int = spec_field(4, help="patch side in pixels")
    embed_dims: tuple[int, ...] = spec_field((16, 8), help="feature width of each member tower")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def build(self) -> Any:
        from prism_core.testing._fake_modules import FakeFusedVisionBackbone

        return FakeFusedVisionBackbone(self.image_size, self.patch_size, self.embed_dims)


@attrs.frozen(kw_only=True)
class FakeLLMSpec(LLMBackboneSpec):
    kind: ClassVar[str] = "fake-llama"
    presets: ClassVar[dict[str, dict]] = {"fake-llama-tiny": {}}

    hidden_size: int = spec_field(32, help="model width")
    num_layers: int = spec_field(2, help="decoder layers")
    num_heads: int = spec_field(4, help="attention heads")
    max_length: int = spec_field(256, help="tokenizer truncation length")
    initializer_range: float = spec_field(0.2, help="init std: large enough that greedy decoding varies by prompt")
    vocab_size: int = spec_field(
        0, at_least=0, help="output vocabulary (0: the tokenizer's 260); larger sizes the head like a real one's")

    @property
    def default_prompt_format(self) -> str:
        return "fake-pure"

    @property
    def supports_packing(self) -> bool:
        return True

    def build_tokenizer(self) -> Any:
        from prism_core.testing._fake_modules import byte_tokenizer

        return byte_tokenizer(self.max_length)

    def build(self) -> Any:
        from prism_core.testing._fake_modules import FakeLLMBackbone

        return FakeLLMBackbone(
            self.build_tokenizer(), self.hidden_size, self.num_layers, self.num_heads, self.initializer_range,
            self.vocab_size,
        )


@attrs.frozen(kw_only=True)
class FakeMLPProjectorSpec(ProjectorSpec):
    kind: ClassVar[str] = "fake-mlp"
    presets: ClassVar[dict[str, dict]] = {"fake-mlp": {}}

    def build(self, in_dim: int, out_dim: int, seed: int = 0) -> Any:
        from prism_core.testing._fake_modules import FakeMLPProjector

        return FakeMLPProjector(in_dim, out_dim, seed)


class FakePureFormat:
    """The original ``PurePromptBuilder`` template, enough for core tests."""

    kind = "fake-pure"
    system_prompt: str | None = None

    def render(self, turns: Sequence[Turn]) -> list[Segment]:
        segments = []
        for i, turn in enumerate(turns):
            expected = "human" if i % 2 == 0 else "gpt"
            if turn.role != expected:
                raise ValueError(f"turn {i}: expected role {expected!r}, got {turn.role!r}")
            message = turn.message.replace("<image>", "").strip()
            if turn.role == "human":
                segments.append(Segment(f"In: {message}\nOut: ", supervised=False))
            else:
                segments.append(Segment(f"{message or ' '}</s>", supervised=True))
        return segments

    def prompt(self, turns: Sequence[Turn]) -> str:
        text = "".join(s.text for s in self.render(turns))
        return text.removeprefix("<s>").rstrip()


@attrs.frozen(kw_only=True)
class FakePureFormatSpec(PromptFormatSpec):
    kind: ClassVar[str] = "fake-pure"
    presets: ClassVar[dict[str, dict]] = {"fake-pure": {}}

    def build(self, tokenizer: Any = None) -> FakePureFormat:
        return FakePureFormat()


FAKE_SPECS: tuple[type, ...] = (
    FakeVisionSpec,
    FakeFusedVisionSpec,
    FakeLLMSpec,
    FakeMLPProjectorSpec,
    FakePureFormatSpec,
)


def fake_registry(extra: Sequence[type] = ()) -> Registry:
    """A registry (autoload off) with every fake spec class plus ``extra`` spec classes."""
    registry = Registry(autoload=False)
    for spec_class in (*FAKE_SPECS, *extra):
        registry.register(spec_class, distribution="prism-core-fakes", version="0")
    return registry
