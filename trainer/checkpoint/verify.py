"""Checking a checkpoint's files against the checksums in its manifest before loading it.

Under torch.distributed every rank hashes a share of the files and the ranks exchange the
names that failed, so the check of a resume costs 1/world of the folder per rank and every
rank raises the same error. A failure names the damaged file and the newest older
checkpoint beside it that verifies (a damaged checkpoint is never skipped silently).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from trainer.checkpoint.checksum import mismatched_files
from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.layout import complete_checkpoints, step_of
from trainer.checkpoint.manifest import read_manifest


def _share() -> tuple[int, int]:
    """(rank, world) when the check is split over the processes, else (0, 1)."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def damaged_files(folder: Path, manifest: dict[str, Any], shared: bool = True) -> list[str]:
    """Files of ``folder`` whose bytes differ from their recorded checksum (all ranks agree)."""
    rank, world = _share() if shared else (0, 1)
    bad = mismatched_files(folder, manifest["checksums"], rank, world)
    if world > 1:
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, bad)
        bad = sorted({name for names in everyone for name in names})
    return bad


def newest_verified_older(folder: Path, shared: bool = True) -> Path | None:
    """The newest complete checkpoint beside ``folder`` with a smaller step that verifies."""
    step = step_of(folder)
    if step is None:
        return None
    for older_step, older in reversed(complete_checkpoints(folder.parent)):
        if older_step >= step:
            continue
        try:
            manifest = read_manifest(older)
        except CheckpointError:
            continue
        if not damaged_files(older, manifest, shared):
            return older
    return None


def verify_checkpoint(
    folder: Path,
    manifest: dict[str, Any],
    how_to_use: Callable[[Path], str],
    shared: bool = True,
) -> None:
    """Raise a one-line :class:`CheckpointError` unless every file matches its checksum.

    ``how_to_use(older)`` says how to pick the older checkpoint that verifies (a flag of the
    command that is loading). ``shared`` splits the work over the ranks (all must call).
    """
    bad = damaged_files(folder, manifest, shared)
    if not bad:
        return
    older = newest_verified_older(folder, shared)
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    fallback = (
        f"the newest older checkpoint that verifies is {older}: {how_to_use(older)}"
        if older is not None
        else f"no older checkpoint in {folder.parent} verifies"
    )
    raise CheckpointError(
        f"checkpoint {folder} is damaged: file {bad[0]}{more} does not match the checksum "
        f"recorded when it was written; nothing was loaded; {fallback}"
    )
