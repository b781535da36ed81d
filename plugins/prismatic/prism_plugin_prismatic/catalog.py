"""Every released Prismatic VLM (TRI-ML/prismatic-vlms, 49 checkpoints): ids, paper-figure names, descriptions and
the configuration each was trained with. Pure data, torch-free.

Two defects of the original registry are fixed here: ``prism-siglip-controlled+13b`` pointed at the 7B files, and
the ``prism-siglip+13b`` training config named a CLIP backbone although the model is described (and published) as a
SigLIP Prism; both are recorded in ``NOTES``.
"""

from __future__ import annotations

from typing import Any

HUB_REPO = "TRI-ML/prismatic-vlms"

LLAVA = "LLaVa v1.5 Instruct"
LVIS = "LVIS-Instruct-4V"
LRV = "LRV-Instruct"
MM_ONLY = "LLaVa v1.5 Multimodal-Only"

CLIP336 = "CLIP ViT-L/14 @ 336px"
SIGLIP384 = "SigLIP ViT-SO/14 @ 384px"
DINOSIGLIP384 = "DINOv2 ViT-L/14 + SigLIP ViT-SO/14 @ 384px"

#: vision_backbone_id → human description, for entries that only vary the backbone.
_VISION = {
    "clip-vit-l-336px": CLIP336,
    "clip-vit-l": "CLIP ViT-L/14 @ 224px",
    "siglip-vit-so400m": "SigLIP ViT-SO/14 @ 224px",
    "siglip-vit-so400m-384px": SIGLIP384,
    "dinov2-vit-l": "DINOv2 ViT-L/14 @ 224px",
    "in1k-vit-l": "ImageNet-21K+1K ViT-L/16 @ 224px",
    "dinoclip-vit-l-336px": "DINOv2 ViT-L/14 + CLIP ViT-L/14 @ 336px",
    "dinosiglip-vit-so-384px": DINOSIGLIP384,
    "dinosiglip-vit-so-224px": "DINOv2 ViT-L/14 + SigLIP ViT-SO 14 @ 224px",
}
_RESIZE = {"letterbox": "Letterbox", "resize-crop": "Resize Crop", "resize-naive": "Naive Resize"}
_LLM = {
    "vicuna-v15-7b": "Vicuña v1.5 7B",
    "vicuna-v15-13b": "Vicuña v1.5 13B",
    "llama2-7b-pure": "Llama-2 7B",
    "llama2-13b-pure": "Llama-2 13B",
    "llama2-7b-chat": "Llama-2 Chat 7B",
    "llama2-13b-chat": "Llama-2 Chat 13B",
    "mistral-v0.1-7b-pure": "Mistral v0.1 7B",
    "mistral-v0.1-7b-instruct": "Mistral Instruct v0.1 7B",
    "phi-2-3b": "Phi-2 3B",
}
#: dataset preset (prism-plugin-llava-data) → the description's dataset names.
_DATA = {
    "llava-v15": [LLAVA],
    "llava-multimodal": [MM_ONLY],
    "llava-lvis4v": [LLAVA, LVIS],
    "llava-lrv": [LLAVA, LRV],
    "llava-lvis4v-lrv": [LLAVA, LVIS, LRV],
}

#: The base every config starts from (the original's ``one-stage+7b``).
_BASE: dict[str, Any] = {
    "arch_specifier": "no-align+gelu-mlp",
    "vision_backbone_id": "clip-vit-l-336px",
    "image_resize_strategy": "letterbox",
    "llm_backbone_id": "vicuna-v15-7b",
    "dataset": "llava-v15",
    "stage": "finetune",
    "epochs": 1,
    "max_steps": None,
}


def _entry(model_id: str, names: list[str], display: str | None = None, **changes: Any) -> dict[str, Any]:
    config = {**_BASE, **changes}
    full_ft = config["stage"] == "full-finetune"
    multi = not config["arch_specifier"].startswith("no-align")
    procedure = ("multi-stage" if multi else "single-stage") + ("-full-finetune" if full_ft else "")
    epochs: float = config["epochs"]
    if config["max_steps"] is not None:  # 5198 optimizer steps make one epoch of mix665k at batch 128
        epochs = round(config["max_steps"] / 5200, 2)
    return {
        "model_id": model_id,
        "names": names,
        "description": {
            "name": display or names[0],
            "optimization_procedure": procedure,
            "visual_representation": _VISION[config["vision_backbone_id"]],
            "image_processing": _RESIZE[config["image_resize_strategy"]],
            "language_model": _LLM[config["llm_backbone_id"]],
            "datasets": list(_DATA[config["dataset"]]),
            "train_epochs": epochs,
        },
        "config": config,
    }


_PRISM = {"image_resize_strategy": "resize-naive", "llm_backbone_id": "llama2-7b-pure"}
_PRISM13 = {"image_resize_strategy": "resize-naive", "llm_backbone_id": "llama2-13b-pure"}
_FULL = {"dataset": "llava-lvis4v-lrv", "epochs": 2}
_DS384 = {"vision_backbone_id": "dinosiglip-vit-so-384px", "arch_specifier": "no-align+fused-gelu-mlp"}
_DS224 = {**_DS384, "vision_backbone_id": "dinosiglip-vit-so-224px"}
_S384 = {"vision_backbone_id": "siglip-vit-so400m-384px"}

_ENTRIES = [
    _entry("reproduction-llava-v15+7b", ["LLaVa v1.5 7B (Reproduction)"], arch_specifier="gelu-mlp"),
    _entry("reproduction-llava-v15+13b", ["LLaVa v1.5 13B (Reproduction)"], arch_specifier="gelu-mlp",
           llm_backbone_id="vicuna-v15-13b"),
    _entry("one-stage+7b", ["One-Stage 7B", "Single-Stage 7B", "Frozen ViT (Single-Stage)",
                            "CLIP ViT-L 336px (Letterbox)", "CLIP ViT-L 336px", "Vicuña v1.5 7B", "1 Epoch", "Base"],
           display="Single-Stage 7B"),
    _entry("one-stage+13b", ["One-Stage 13B", "Single-Stage 13B", "Vicuña v1.5 13B"], display="Single-Stage 13B",
           llm_backbone_id="vicuna-v15-13b"),
    _entry("full-ft-multi-stage+7b", ["Finetune ViT (Multi-Stage)"], arch_specifier="gelu-mlp", stage="full-finetune"),
    _entry("full-ft-one-stage+7b", ["Finetune ViT (Single-Stage)"], stage="full-finetune"),
    _entry("in1k-224px+7b", ["IN1K ViT-L 224px"], vision_backbone_id="in1k-vit-l"),
    _entry("dinov2-224px+7b", ["DINOv2 ViT-L 224px"], vision_backbone_id="dinov2-vit-l"),
    _entry("clip-224px+7b", ["CLIP ViT-L 224px"], vision_backbone_id="clip-vit-l"),
    _entry("siglip-224px+7b", ["SigLIP ViT-SO 224px"], vision_backbone_id="siglip-vit-so400m"),
    _entry("clip-336px-resize-crop+7b", ["CLIP ViT-L 336px (Resize Crop)"], image_resize_strategy="resize-crop"),
    _entry("clip-336px-resize-naive+7b", ["CLIP ViT-L 336px (Naive Resize)", "CLIP 336px (Naive Resize)"],
           image_resize_strategy="resize-naive"),
    _entry("siglip-384px-letterbox+7b", ["SigLIP ViT-SO 384px (Letterbox)", "SigLIP ViT-SO 384px"], **_S384),
    _entry("siglip-384px-resize-crop+7b", ["SigLIP ViT-SO 384px (Resize Crop)"], image_resize_strategy="resize-crop",
           **_S384),
    _entry("siglip-384px-resize-naive+7b", ["SigLIP ViT-SO 384px (Naive Resize)", "SigLIP 384px (Naive Resize)"],
           image_resize_strategy="resize-naive", **_S384),
    _entry("dinoclip-336px-letterbox+7b", ["DINOv2 + CLIP 336px (Letterbox)"],
           vision_backbone_id="dinoclip-vit-l-336px", arch_specifier="no-align+fused-gelu-mlp"),
    _entry("dinoclip-336px-resize-naive+7b", ["DINOv2 + CLIP 336px (Naive Resize)"],
           vision_backbone_id="dinoclip-vit-l-336px", arch_specifier="no-align+fused-gelu-mlp",
           image_resize_strategy="resize-naive"),
    _entry("dinosiglip-384px-letterbox+7b", ["DINOv2 + SigLIP 384px (Letterbox)"], **_DS384),
    _entry("dinosiglip-384px-resize-naive+7b", ["DINOv2 + SigLIP 384px (Naive Resize)"],
           image_resize_strategy="resize-naive", **_DS384),
    _entry("llama2+7b", ["Llama-2 7B"], llm_backbone_id="llama2-7b-pure"),
    _entry("llama2+13b", ["Llama-2 13B"], llm_backbone_id="llama2-13b-pure"),
    _entry("llama2-chat+7b", ["Llama-2 Chat 7B"], llm_backbone_id="llama2-7b-chat"),
    _entry("llama2-chat+13b", ["Llama-2 Chat 13B"], llm_backbone_id="llama2-13b-chat"),
    _entry("mistral-v0.1+7b", ["Mistral v0.1 7B"], llm_backbone_id="mistral-v0.1-7b-pure"),
    _entry("mistral-instruct-v0.1+7b", ["Mistral Instruct v0.1 7B"], llm_backbone_id="mistral-v0.1-7b-instruct"),
    _entry("phi-2+3b", ["Phi-2 3B"], llm_backbone_id="phi-2-3b"),
    _entry("vicuna-no-cotraining+7b", ["Vicuña v1.5 7B (No Co-training)"], dataset="llava-multimodal"),
    _entry("llama2-no-cotraining+7b", ["Llama-2 7B (No Co-training)"], dataset="llava-multimodal",
           llm_backbone_id="llama2-7b-pure"),
    _entry("train-1.25-epochs+7b", ["1.25 Epochs"], epochs=2, max_steps=6500),
    _entry("train-1.5-epochs+7b", ["1.5 Epochs"], epochs=2, max_steps=7800),
    _entry("train-2-epochs+7b", ["2 Epochs"], epochs=2),
    _entry("train-3-epochs+7b", ["3 Epochs"], epochs=3),
    _entry("llava-lvis4v+7b", ["Base + LVIS-4V"], dataset="llava-lvis4v"),
    _entry("llava-lrv+7b", ["Base + LRV"], dataset="llava-lrv"),
    _entry("llava-lvis4v-lrv+7b", ["Base + LVIS-4V + LRV"], dataset="llava-lvis4v-lrv"),
    _entry("prism-clip-controlled+7b", ["Prism-CLIP 7B (Controlled)"], display="CLIP Prism 7B (Controlled)", **_PRISM),
    _entry("prism-clip-controlled+13b", ["Prism-CLIP 13B (Controlled)"], display="CLIP Prism 13B (Controlled)",
           **_PRISM13),
    _entry("prism-clip+7b", ["Prism-CLIP 7B"], display="CLIP Prism 7B", **_PRISM, **_FULL),
    _entry("prism-clip+13b", ["Prism-CLIP 13B"], display="CLIP Prism 13B", **_PRISM13, **_FULL),
    _entry("prism-siglip-controlled+7b", ["Prism-SigLIP 7B (Controlled)"], display="SigLIP Prism 7B (Controlled)",
           **_PRISM, **_S384),
    _entry("prism-siglip-controlled+13b", ["Prism-SigLIP 13B (Controlled)"], display="SigLIP Prism 13B (Controlled)",
           **_PRISM13, **_S384),
    _entry("prism-siglip+7b", ["Prism-SigLIP 7B"], display="SigLIP Prism 7B", **_PRISM, **_FULL, **_S384),
    _entry("prism-siglip+13b", ["Prism-SigLIP 13B"], display="SigLIP Prism 13B", **_PRISM13, **_FULL, **_S384),
    _entry("prism-dinosiglip-controlled+7b", ["Prism-DINOSigLIP 7B (Controlled)", "Prism 7B (Controlled)"],
           display="DINOSigLIP Prism 7B (Controlled)", **_PRISM, **_DS384),
    _entry("prism-dinosiglip-controlled+13b", ["Prism-DINOSigLIP 13B (Controlled)", "Prism 13B (Controlled)"],
           display="DINOSigLIP Prism 13B (Controlled)", **_PRISM13, **_DS384),
    _entry("prism-dinosiglip+7b", ["Prism-DINOSigLIP 7B"], display="DINOSigLIP Prism 7B", **_PRISM, **_FULL, **_DS384),
    _entry("prism-dinosiglip+13b", ["Prism-DINOSigLIP 13B"], display="DINOSigLIP Prism 13B", **_PRISM13, **_FULL,
           **_DS384),
    _entry("prism-dinosiglip-224px-controlled+7b", ["Prism-DINOSigLIP 224px 7B (Controlled)"],
           display="DINOSigLIP 224px 7B (Controlled)", **_PRISM, **_DS224),
    _entry("prism-dinosiglip-224px+7b", ["Prism-DINOSigLIP 224px 7B"], display="DINOSigLIP 224px 7B", **_PRISM,
           **_FULL, **_DS224),
]

#: model_id → entry (``model_id``, ``names``, ``description``, ``config``), in the original's order.
MODELS: dict[str, dict[str, Any]] = {e["model_id"]: e for e in _ENTRIES}

NOTES = {
    "prism-siglip-controlled+13b": "the original registry pointed this id at the 7B checkpoint; fixed",
    "prism-siglip+13b": "the original training config named clip-vit-l-336px (copy-paste); the recipe uses SigLIP-384",
    "train-1.25-epochs+7b": "2 scheduled epochs cut at max_steps = 6500 optimizer steps",
    "train-1.5-epochs+7b": "2 scheduled epochs cut at max_steps = 7800 optimizer steps",
}
