"""LLaVA data for prism: kind ``llava`` (align/finetune, weighted mixtures) and ``prism data prepare``."""
