"""Fault injection for tests: crash a run at a chosen point of checkpointing.

Both hooks are off unless their environment variable is set to a step number; they send
SIGKILL to the process itself (no cleanup, no Python ``finally``), like a machine failure.

- ``TRAINER_FAULT_KILL_AFTER_CHECKPOINT=N``: every rank dies right after the checkpoint of
  step N is complete (renamed and seen by all ranks).
- ``TRAINER_FAULT_KILL_DURING_SAVE=N``: every rank dies during the save of step N, after its
  own data files are written and before the coordinator writes DCP's ``.metadata``, leaving
  ``step-N.partial`` behind.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from torch.futures import Future

from trainer.checkpoint.checksum import ChecksummingWriter

KILL_AFTER_CHECKPOINT = "TRAINER_FAULT_KILL_AFTER_CHECKPOINT"
"""Environment variable: step after whose complete checkpoint every rank is killed."""

KILL_DURING_SAVE = "TRAINER_FAULT_KILL_DURING_SAVE"
"""Environment variable: step during whose save every rank is killed."""


def _armed(variable: str, step: int) -> bool:
    value = os.environ.get(variable, "")
    return value.strip().isdigit() and int(value) == step


def kill_self() -> None:
    """SIGKILL this process."""
    os.kill(os.getpid(), signal.SIGKILL)


def after_checkpoint(step: int) -> None:
    """Die here if the kill-after-checkpoint fault is armed for ``step``."""
    if _armed(KILL_AFTER_CHECKPOINT, step):
        kill_self()


class CrashingWriter(ChecksummingWriter):
    """A FileSystemWriter that kills the process once its data files are on disk."""

    def write_data(self, plan: Any, planner: Any) -> Future:
        """Write this rank's files, wait for them, then die."""
        future = super().write_data(plan, planner)
        future.wait()
        kill_self()
        return future


def storage_writer(path: Path, step: int) -> ChecksummingWriter:
    """The writer for a save of ``step`` into ``path`` (crashing when that fault is armed)."""
    if _armed(KILL_DURING_SAVE, step):
        return CrashingWriter(path)
    return ChecksummingWriter(path)
