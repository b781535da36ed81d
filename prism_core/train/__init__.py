"""Training: the recipe (``loop.train``), optimizer and schedules, checkpoints, trackers, run directories.

Importing this package is cheap; the submodules import torch.
"""

__all__ = ["checkpoint", "distributed", "flops", "loop", "optim", "run_dir", "trackers"]
