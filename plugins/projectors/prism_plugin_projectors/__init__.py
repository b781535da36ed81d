"""prism projectors with the original Prismatic layer layout (``projector.0.weight``, ``projector.2.bias`` …)."""
