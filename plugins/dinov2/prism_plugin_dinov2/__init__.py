"""prism vision backbone kind ``dinov2``: DINOv2 ViTs with registers, as timm builds them."""
