"""Vision backbones from timm ViTs, shared by the siglip, dinov2 and clip plugins.

Importing this package is cheap (no torch): ``spec`` holds the attrs spec classes; ``backbone``, ``transforms`` and
``weights`` import torch and timm. Image files are read with ``prism_core.images.load_image``.
"""
