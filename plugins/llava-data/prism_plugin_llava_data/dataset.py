"""A seeded, reproducible weighted mixture of LLaVA annotation files as one ``Dataset``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from prism_core.data import BadExample, MissingDataError
from prism_core.data.conversations import ConversationDataset, Record, load_conversations
from prism_plugin_llava_data.spec import Component, LlavaSpec


def draw(count: int, size: int, rng: random.Random) -> list[int]:
    """``count`` indices into ``range(size)``: whole passes, then a seeded subset without replacement."""
    if size == 0:
        return []
    full, rest = divmod(count, size)
    return sorted([*range(size)] * full + rng.sample(range(size), rest))


class LlavaMixture(ConversationDataset):
    """The mixture's records in component order; ``component_names[i]`` names example ``i``'s component."""

    def __init__(self, records: list[Record], component_names: list[str], **kwargs: Any) -> None:
        super().__init__(records, **kwargs)
        self.component_names = component_names


def _resolve(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def build_mixture(
    spec: LlavaSpec, *, tokenizer: Any, prompt_format: Any, image_transform: Any, split: str = "train",
    stage: str = "finetune",
) -> LlavaMixture:
    """The mixture of the components ``stage`` (``train.stage``) trains on."""
    if split != "train":
        raise ValueError(f"llava data has only a 'train' split, not {split!r}")
    root = Path(spec.root).expanduser()
    data_stage = "align" if stage == "align" else "finetune"  # full-finetune reads the finetune components
    default_format = "caption" if data_stage == "align" else "chat"
    records: list[Record] = []
    names: list[str] = []
    bad: list[BadExample] = []
    for i, component in enumerate(spec.components(stage)):
        part, part_bad = _load_component(root, component, default_format, spec)
        bad += part_bad
        rng = random.Random(f"prism-llava:{spec.seed}:{data_stage}:{i}:{component.annotations}")
        count = component.samples if component.samples is not None else round(component.weight * len(part))
        chosen = draw(count, len(part), rng)
        records += [part[j] for j in chosen]
        names += [component.annotations] * len(chosen)
    return LlavaMixture(records, names, tokenizer=tokenizer, prompt_format=prompt_format,
                        image_transform=image_transform, on_bad_example=spec.on_bad_example, bad_at_load=bad)


def _load_component(
    root: Path, c: Component, default_format: str, spec: LlavaSpec
) -> tuple[list[Record], list[BadExample]]:
    path = _resolve(root, c.annotations)
    if not path.is_file():
        raise MissingDataError(f"{path}: annotation file not found (run `prism data prepare {spec.preset or 'ID'} "
                                f"--root {spec.root}` to download and prepare it)")
    return load_conversations(path, _resolve(root, c.images), format=c.format or default_format,  # type: ignore[arg-type]
                              on_bad_example=spec.on_bad_example, require_image=c.require_image,
                              verify_images=spec.verify_images)
