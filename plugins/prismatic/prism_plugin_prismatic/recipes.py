"""The training recipe of every released Prismatic VLM as a prism run spec (TOML), served as named specs.

``prism spec fill prism-dinosiglip+7b`` / ``prism-run prism-dinosiglip+7b`` find these through the ``prism.specs``
entry points this plugin declares (one per model id, plus ``<id>@align`` for the two-stage models). Each entry point
names a module attribute generated from the catalog below; calling it returns the TOML text. Torch-free.

A few field names belong to other plugins (the vision resize strategy, the LLM's max length, the FSDP sharding
mode, the data stage); they are named once below, and tests/interop checks every recipe against those plugins.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import tomli_w

from prism_plugin_prismatic.catalog import MODELS, NOTES

ALIGN_SUFFIX = "@align"

#: Optimisation values every original config shares (prismatic-inventory §6.8); stage → TrainSpec fields.
STAGE_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "align": {"global_batch_size": 256, "per_device_batch_size": 16, "learning_rate": 1e-3, "weight_decay": 0.0},
    "finetune": {"global_batch_size": 128, "per_device_batch_size": 16, "learning_rate": 2e-5, "weight_decay": 0.1},
}
COMMON_TRAIN: dict[str, Any] = {
    "lr_schedule": "linear-warmup+cosine-decay",
    "warmup_ratio": 0.03,
    "max_grad_norm": 1.0,
    "precision": "bf16",
    "activation_checkpointing": True,
}
#: The original's default strategy per stage: FSDP "shard-grad-op" to align, "full-shard" to finetune.
SHARDING = {"align": "shard-grad-op", "finetune": "full-shard", "full-finetune": "full-shard"}
LLM_MAX_LENGTH = 2048
#: Field names of the other plugins' specs the recipes fill in (prism-plugin-timm-vision/siglip/clip/dinov2/fusion
#: ``resize``; prism-plugin-llama2/hf-llm ``max_length``; prism-plugin-fsdp ``sharding``). tests/interop validates
#: every recipe against the installed plugins, so a rename there fails loudly.
VISION_RESIZE_FIELD = "resize"
LLM_MAX_LENGTH_FIELD = "max_length"
FSDP_SHARDING_FIELD = "sharding"


def vision_kind(backbone_id: str) -> str:
    if backbone_id.startswith(("dinoclip", "dinosiglip")):
        return "fused"
    for prefix, kind in (("clip", "clip"), ("siglip", "siglip"), ("dinov2", "dinov2"), ("in1k", "timm-vit")):
        if backbone_id.startswith(prefix):
            return kind
    raise ValueError(f"no vision kind known for backbone id {backbone_id!r}")


def llm_kind(backbone_id: str) -> str:
    return "llama2" if backbone_id.startswith(("llama2", "vicuna")) else "hf-causal-lm"


def projector_kind(arch_specifier: str) -> str:
    for kind in ("fused-gelu-mlp", "gelu-mlp", "linear"):  # fused first: "gelu-mlp" is its suffix too
        if arch_specifier.endswith(kind):
            return kind
    raise ValueError(f"unknown arch_specifier {arch_specifier!r}")


def recipe(model_id: str, stage: str | None = None) -> dict[str, Any]:
    """The run spec (as a TOML-ready table) that trained ``model_id``; ``stage="align"`` for the first of two."""
    config = MODELS[model_id]["config"]
    final_stage = config["stage"]
    two_stage = not config["arch_specifier"].startswith("no-align")
    stage = stage or final_stage
    if stage == "align" and not two_stage:
        raise ValueError(f"{model_id} is a single-stage model: it has no align stage")

    vision: dict[str, Any] = {"kind": vision_kind(config["vision_backbone_id"]), "preset": config["vision_backbone_id"]}
    vision[VISION_RESIZE_FIELD] = config["image_resize_strategy"]
    llm: dict[str, Any] = {"kind": llm_kind(config["llm_backbone_id"]), "preset": config["llm_backbone_id"],
                           LLM_MAX_LENGTH_FIELD: LLM_MAX_LENGTH}
    projector = {"kind": projector_kind(config["arch_specifier"])}
    model: dict[str, Any] = {"vision": vision, "llm": llm, "projector": projector}
    if two_stage and stage != "align":
        model["init_from"] = f"runs/{model_id}{ALIGN_SUFFIX}"

    hyper = STAGE_HYPERPARAMETERS["align" if stage == "align" else "finetune"]
    train: dict[str, Any] = {"stage": stage, "epochs": 1 if stage == "align" else config["epochs"], **hyper,
                             **COMMON_TRAIN, "run_name": model_id + (ALIGN_SUFFIX if stage == "align" else "")}
    if stage != "align" and config["max_steps"] is not None:
        train["max_steps"] = config["max_steps"]
    train["strategy"] = {"kind": "fsdp", FSDP_SHARDING_FIELD: SHARDING[stage]}
    # The llava data plugin keeps both stages' component lists in each mixture preset; train.stage picks one (align:
    # the LLaVA-Pretrain 558K captions, the same for every mixture).
    data = {"kind": "llava", "preset": config["dataset"]}
    return {"schema": 1, "model": model, "data": data, "train": train}


def recipe_toml(name: str) -> str:
    """TOML text of the named recipe (``<model_id>`` or ``<model_id>@align``), with a header saying what it is."""
    model_id, stage, _ = name.partition(ALIGN_SUFFIX)
    entry = MODELS[model_id]
    header = [f"# Recipe of the released Prismatic VLM {model_id!r} ({entry['description']['name']}).",
              f"# Procedure: {entry['description']['optimization_procedure']}; data: "
              f"{', '.join(entry['description']['datasets'])}; {entry['description']['train_epochs']} epoch(s)."]
    if stage:
        header.append(f"# Stage 1 of 2; then run {model_id!r}, which starts from this run's export.")
    elif "init_from" in recipe(model_id)["model"]:
        header.append(f"# Stage 2 of 2: run {model_id + ALIGN_SUFFIX!r} first (model.init_from names its output).")
    if model_id in NOTES:
        header.append(f"# Note: {NOTES[model_id]}.")
    return "\n".join(header) + "\n" + tomli_w.dumps(recipe(model_id, "align" if stage else None))


def recipe_names() -> list[str]:
    """Every named recipe, sorted: one per model id plus ``<id>@align`` for two-stage models."""
    names = list(MODELS)
    names += [m + ALIGN_SUFFIX for m, e in MODELS.items() if not e["config"]["arch_specifier"].startswith("no-align")]
    return sorted(names)


def attribute_name(name: str) -> str:
    """Module attribute serving ``name`` (entry-point targets are identifiers): ``a-b+7b`` → ``recipe_a_b__7b``."""
    return "recipe_" + re.sub(r"[^0-9a-zA-Z]", "_", name.replace("+", "__").replace(ALIGN_SUFFIX, "___align"))


for _name in recipe_names():
    globals()[attribute_name(_name)] = functools.partial(recipe_toml, _name)


def entry_points_toml() -> str:
    """The ``[project.entry-points."prism.specs"]`` table for pyproject.toml (a test keeps the two in sync)."""
    lines = ['[project.entry-points."prism.specs"]']
    lines += [f'"{n}" = "prism_plugin_prismatic.recipes:{attribute_name(n)}"' for n in recipe_names()]
    return "\n".join(lines) + "\n"
