"""Distributed checkpoints (torch.distributed.checkpoint): atomic saves, exact resume, seed loads."""

from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.manager import CheckpointManager

__all__ = ["CheckpointError", "CheckpointManager"]
