"""The error raised for unusable checkpoints and checkpoint/config disagreements."""

from __future__ import annotations

from trainer.config import ConfigError


class CheckpointError(ConfigError):
    """A checkpoint folder is missing, partial, corrupt, or does not fit the configured run.

    A :class:`ConfigError`, so ``scripts/train.py`` reports it as one line and exits with
    status 2. Raising it never modifies or deletes a checkpoint.
    """
