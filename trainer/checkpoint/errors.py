"""The error raised for unusable checkpoints and checkpoint/config disagreements."""

from __future__ import annotations

from trainer.errors import CheckpointError

__all__ = ["CheckpointError"]
