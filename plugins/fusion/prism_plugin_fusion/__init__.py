"""prism vision backbone kind ``fused``: member backbones side by side, features concatenated channel-wise."""
