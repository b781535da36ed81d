"""``[train] compile = true``: the model's repeated blocks run under ``torch.compile``.

What is compiled: every LLM decoder layer (``decoder_layer_classes``) and vision block (``shard_block_classes``),
each in place (``nn.Module.compile``: state-dict names stay as they are, so checkpoints and exports do not change).
The blocks hold nearly all the FLOPs and share one shape, so one compiled graph serves every layer; the splice, the
attention masks and the chunked loss have data-dependent shapes and stay eager. Blocks are compiled before the
strategy wraps the model (FSDP2 then shards compiled blocks, as torchtitan does) and after activation checkpointing
(recomputation calls the compiled block again). Micro-batches differ in shape (rows, width, images), so blocks are
compiled for dynamic shapes once, at the first step, rather than once per shape. ``benchmarks/packing.py`` measures
what it costs and gains.
"""

from __future__ import annotations

import torch


def compile_blocks(model: torch.nn.Module) -> int:
    """Compile each decoder layer and vision block of ``model`` in place; returns how many were compiled."""
    classes = (*getattr(getattr(model, "llm_backbone", None), "decoder_layer_classes", ()),
               *getattr(getattr(model, "vision_backbone", None), "shard_block_classes", ()))
    if not classes:
        raise ValueError("train.compile: the model's backbones list no decoder_layer_classes / shard_block_classes")
    blocks = [module for module in model.modules() if isinstance(module, classes)]
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)
