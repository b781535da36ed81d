"""prism vision backbone kind ``siglip``: SigLIP ViTs (Google, sigmoid loss), as timm builds them."""
