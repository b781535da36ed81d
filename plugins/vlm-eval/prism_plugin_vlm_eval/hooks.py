"""``prism data prepare KIND``: the benchmarks' downloads, added to the command the data plugins share.

Torch-free; the preparation code is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from prism_plugin_llava_data.hooks import prepare_command

from prism_core.hooks import hookimpl

#: The benchmarks ``prism data prepare`` downloads (their task kinds); a test keeps this equal to the spec classes.
BENCHMARKS = {
    "vqa-v2": "VQAv2 val questions and answers, COCO val2014 images",
    "gqa": "GQA questions (test-dev balanced) and images",
    "vizwiz": "VizWiz val annotations and images",
    "text-vqa": "TextVQA val, LLaVA-1.5's OCR-token questions, images",
    "pope": "POPE's three COCO splits, COCO val2014 images",
    "vsr": "VSR zero-shot test split and images",
    "tally-qa": "TallyQA test, Visual Genome images",
    "ai2d": "AI2D diagrams, questions and test ids",
    "refcoco": "RefCOCO (UNC), COCO train2014 images",
    "refcoco+": "RefCOCO+ (UNC), COCO train2014 images",
    "refcocog": "RefCOCOg (UMD), COCO train2014 images",
    "ocid-ref": "OCID-Ref expressions (the OCID scenes by hand)",
}


@hookimpl
def prism_add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    from prism_core.cli.data import prepare_ids

    prepare_ids(subparsers, {kind: f"benchmark: {text}" for kind, text in BENCHMARKS.items()},
                prepare_command("prism_plugin_vlm_eval.prepare"))
