"""Spec for LLaVA-format data with runtime weighted mixtures (torch-free; the dataset is built in ``build``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import attrs

from prism_core.spec import SEED_RANGE, DatasetSpec, spec_field

ALIGN_DIR = "download/llava-laion-cc-sbu-558k"
INSTRUCT_DIR = "download/llava-v1.5-instruct"


@attrs.frozen(kw_only=True)
class Component:
    """One annotation file of a mixture and how much of it to draw."""

    annotations: str = spec_field(help="LLaVA JSON file, relative to the spec's root (or absolute)")
    images: str = spec_field(help="directory the entries' 'image' paths are relative to (relative to root)")
    weight: float = spec_field(
        1.0, at_least=0, help="examples drawn = round(weight × entries): 0.5 = a seeded half, 2 = twice")
    samples: int | None = spec_field(
        None, at_least=0, help="draw exactly this many examples instead (overrides weight)")
    require_image: bool = spec_field(False, help="drop text-only entries (e.g. ShareGPT in mix665k)")
    format: Literal["chat", "caption"] | None = spec_field(
        None, help="chat (multi-turn) or caption (prompt dropped); default: caption for align, chat for finetune"
    )


def _component(annotations: str, images: str = INSTRUCT_DIR, **kw: Any) -> dict[str, Any]:
    return {"annotations": annotations, "images": images, **kw}


_ALIGN = (_component(f"{ALIGN_DIR}/chat.json", ALIGN_DIR),)
_MIX665K = _component(f"{INSTRUCT_DIR}/llava_v1_5_mix665k.json")
_LVIS = _component(f"{INSTRUCT_DIR}/lvis_instruct4v_220k.json")
_LRV = _component(f"{INSTRUCT_DIR}/lrv_instruct_342k.json")


@attrs.frozen(kw_only=True)
class LlavaSpec(DatasetSpec):
    """LLaVA-Pretrain captions (align) and LLaVA v1.5 chat data (finetune), mixed at run time."""

    kind: ClassVar[str] = "llava"
    moved_fields: ClassVar[dict[str, str]] = {
        "stage": "the stage is said once, in train.stage (align reads the `align` components, the finetune stages "
                 "the `finetune` ones): remove data.stage"}
    # The original five dataset configs. The original shipped pre-merged mixture files; here the parts are
    # listed and mixed at run time (`prism data prepare` also writes the merged files, for compatibility).
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "llava-v15": {"align": _ALIGN, "finetune": (_MIX665K,)},
        "llava-multimodal": {"align": _ALIGN, "finetune": ({**_MIX665K, "require_image": True},)},
        "llava-lvis4v": {"align": _ALIGN, "finetune": (_MIX665K, _LVIS)},
        "llava-lrv": {"align": _ALIGN, "finetune": (_MIX665K, _LRV)},
        "llava-lvis4v-lrv": {"align": _ALIGN, "finetune": (_MIX665K, _LVIS, _LRV)},
    }

    root: str = spec_field("data", help="directory the component paths are relative to")
    align: tuple[Component, ...] = spec_field((), help="components for train.stage = 'align'")
    finetune: tuple[Component, ...] = spec_field(
        (), help="components for train.stage = 'finetune' or 'full-finetune'")
    seed: int = spec_field(7, **SEED_RANGE, help="seed for drawing the weighted subsets")
    verify_images: bool = spec_field(False, help="check every image file exists before training starts")
    on_bad_example: Literal["error", "skip"] = spec_field("error", help="unusable example: raise, or count and skip")

    def components(self, stage: str) -> tuple[Component, ...]:
        """The component list ``train.stage`` trains on."""
        return self.align if stage == "align" else self.finetune

    def stage_problems(self, stage: str) -> Iterator[tuple[str, str]]:
        field = "align" if stage == "align" else "finetune"
        if not self.components(stage):
            yield field, f"no components for train.stage = {stage!r}"

    def build(self, *, tokenizer: Any, prompt_format: Any, image_transform: Any, split: str = "train",
              stage: str = "finetune") -> Any:
        from prism_plugin_llava_data.dataset import build_mixture

        return build_mixture(self, tokenizer=tokenizer, prompt_format=prompt_format,
                             image_transform=image_transform, split=split, stage=stage)
