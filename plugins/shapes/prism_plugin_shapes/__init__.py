"""Synthetic coloured-shapes data set (kind ``synthetic-shapes``) for quick end-to-end training checks."""
