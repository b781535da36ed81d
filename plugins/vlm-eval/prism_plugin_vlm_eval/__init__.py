"""The TRI-ML/vlm-evaluation benchmarks as prism evaluation tasks, their downloads, and an lmms-eval model.

Kinds (``prism.eval_tasks``): vqa-v2, gqa, vizwiz, text-vqa, pope, vsr, tally-qa, ai2d, refcoco, refcoco+, refcocog,
ocid-ref. See docs/evaluation.md.
"""
