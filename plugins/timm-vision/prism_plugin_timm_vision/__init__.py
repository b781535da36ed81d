"""Vision backbones from timm ViTs, shared by the siglip, dinov2 and clip plugins.

Importing this package is cheap (no torch): ``spec`` holds the attrs spec classes, ``images`` the PIL-only
``load_image`` helper; ``backbone``, ``transforms`` and ``weights`` import torch and timm.
"""

from prism_plugin_timm_vision.images import ImageLoadError, load_image

__all__ = ["ImageLoadError", "load_image"]
