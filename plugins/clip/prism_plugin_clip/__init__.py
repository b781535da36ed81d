"""prism vision backbone kind ``clip``: OpenAI CLIP ViTs, as timm builds them, with quick_gelu."""
