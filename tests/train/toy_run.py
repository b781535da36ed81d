"""A complete, tiny training setup for the loop tests: the core fakes (fake-vit, fake-llama, fake-mlp) composed by
``prism_core.composition``, a small mixed image / text-only data set, and the three strategy specs."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import attrs

from prism_core.prompting import tokenize_conversation
from prism_core.registry import Registry
from prism_core.spec import DatasetSpec, spec_field
from prism_core.testing.fakes import fake_registry
from prism_core.types import Example, Turn

WORDS = ["red", "green", "blue", "square", "circle", "small", "large", "left", "right", "top", "bottom", "shape",
         "colour"]


class ToyDataset:
    def __init__(self, spec: ToyDataSpec, tokenizer: Any, prompt_format: Any, image_transform: Any) -> None:
        import torch
        from PIL import Image

        rng = random.Random(spec.seed)
        self.examples = []
        for i in range(spec.num_examples):
            has_image = i % 3 != 2  # two thirds with an image
            question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, spec.answer_words)))
            ids, labels = tokenize_conversation(tokenizer, prompt_format,
                                                [Turn("human", f"<image>\n{question}"), Turn("gpt", answer)])
            pixels = None
            if has_image:
                colour = tuple(rng.randrange(256) for _ in range(3))
                pixels = image_transform(Image.new("RGB", (16, 16), colour))
            self.examples.append(Example(torch.tensor(ids), torch.tensor(labels), pixels, f"toy#{i}"))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def modality_lengths(self) -> list[tuple[bool, int]]:
        return [(e.has_image, len(e.input_ids)) for e in self.examples]


@attrs.frozen(kw_only=True)
class ToyDataSpec(DatasetSpec):
    kind: ClassVar[str] = "train-toy"
    presets: ClassVar[dict[str, dict]] = {"train-toy": {}}

    num_examples: int = spec_field(32, help="examples")
    seed: int = spec_field(0, help="content seed")
    answer_words: int = spec_field(4, help="longest answer, in words (benchmarks use long ones)")

    def build(self, *, tokenizer: Any, prompt_format: Any, image_transform: Any, split: str = "train",
              stage: str = "finetune") -> Any:
        return ToyDataset(self, tokenizer, prompt_format, image_transform)


@attrs.frozen(kw_only=True)
class ToyFilesSpec(DatasetSpec):
    """A LLaVA-format annotation file and its images, read by prism-core's conversation reader (the reliability
    tests plant bad images, entries and bytes in one)."""

    kind: ClassVar[str] = "train-files"

    annotations: str = spec_field(help="LLaVA chat JSON file")
    images: str | None = spec_field(None, help="directory the entries' images are relative to (default: its own)")
    on_bad_example: str = spec_field("error", help="error or skip")

    def build(self, *, tokenizer: Any, prompt_format: Any, image_transform: Any, split: str = "train",
              stage: str = "finetune") -> Any:
        from prism_core.data.conversations import ConversationDataset, load_conversations

        records, bad = load_conversations(self.annotations, self.images, on_bad_example=self.on_bad_example)
        return ConversationDataset(records, tokenizer=tokenizer, prompt_format=prompt_format,
                                   image_transform=image_transform, on_bad_example=self.on_bad_example,
                                   bad_at_load=bad)


def registry() -> Registry:
    """The fakes, the toy data and the strategies; the adapter kinds too where prism-plugin-peft is installed (the
    tracker sessions install only the strategies)."""
    from prism_plugin_ddp.spec import DDPSpec
    from prism_plugin_fsdp.spec import FSDPSpec
    from prism_plugin_single.spec import SingleSpec

    adapters: tuple[type, ...] = ()
    try:
        from prism_plugin_peft.spec import DoRASpec, LoRASpec, QLoRASpec
    except ImportError:
        pass
    else:
        adapters = (LoRASpec, DoRASpec, QLoRASpec)
    return fake_registry(extra=(ToyDataSpec, ToyFilesSpec, SingleSpec, DDPSpec, FSDPSpec, *adapters))


def spec_toml(output_dir: str, run_name: str = "toy", model: dict | None = None, data: dict | None = None,
              **train: Any) -> str:
    """A run spec over the fakes; ``train`` entries override the [train] table, ``model`` / ``data`` tables
    replace the fakes' defaults (values written as TOML)."""
    import tomli_w

    table = {"stage": "finetune", "global_batch_size": 8, "per_device_batch_size": 4, "learning_rate": 3e-3,
             "max_steps": 6, "precision": "fp32", "num_workers": 0, "output_dir": output_dir,
             "run_name": run_name, "warmup_ratio": 0.2, **train}
    table = {k: v for k, v in table.items() if v is not None}  # None: the field's default (TOML has no null)
    return tomli_w.dumps({
        "schema": 1,
        "model": model or {"vision": {"kind": "fake-vit"}, "llm": {"kind": "fake-llama"},
                           "projector": {"kind": "fake-mlp"}},
        "data": data or {"kind": "train-toy"},
        "train": table,
    })
