"""The model package's errors (no torch import, so resolving a checkpoint stays light)."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, or not made by ``save_pretrained``."""
