"""prism-plugin-prismatic: the released Prismatic VLMs (registry, training recipes, original-layout loading),
Hugging Face Hub push/pull for prism models, and ``prism export hf`` (LlavaForConditionalGeneration).

Importing this package does not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
