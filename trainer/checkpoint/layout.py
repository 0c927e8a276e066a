"""Folder layout of a run's checkpoints and the filesystem steps that make saves atomic.

``<dump_folder>/checkpoints/step-<N>/`` is a complete checkpoint: every rank's DCP files,
DCP's ``.metadata`` (written by the coordinator after all ranks finished), plus our
``manifest.json``. A save is written into ``step-<N>.partial/`` and renamed to ``step-<N>``
only after all of that exists, so a name without suffix never denotes a partial save.
Deletion first renames a folder to ``step-<N>.deleting`` so that a crash during ``rmtree``
leaves no half-deleted folder under a complete name.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
"""Subfolder of the dump folder that holds the step folders."""

MANIFEST = "manifest.json"
"""Our description of a checkpoint (step, world size, model, method, file sizes)."""

DCP_METADATA = ".metadata"
"""torch.distributed.checkpoint's index, written last by the coordinator rank."""

PARTIAL_SUFFIX = ".partial"
"""Suffix of a folder being written."""

DELETING_SUFFIX = ".deleting"
"""Suffix of a folder being deleted."""

_COMPLETE = re.compile(r"^step-(\d+)$")
_ANY = re.compile(r"^step-(\d+)(\.partial|\.deleting)?$")


def checkpoint_root(dump_folder: str | Path) -> Path:
    """``<dump_folder>/checkpoints``."""
    return Path(dump_folder) / CHECKPOINT_DIR


def step_folder(root: Path, step: int) -> Path:
    """Folder of the complete checkpoint of ``step``."""
    return root / f"step-{step}"


def partial_folder(root: Path, step: int) -> Path:
    """Folder that a save of ``step`` writes into before it is complete."""
    return root / f"step-{step}{PARTIAL_SUFFIX}"


def step_of(path: Path) -> int | None:
    """The step of a complete-named folder ``step-<N>``, else None."""
    match = _COMPLETE.match(path.name)
    return int(match.group(1)) if match else None


def is_complete(path: Path) -> bool:
    """A ``step-<N>`` folder holding DCP's ``.metadata`` and our manifest."""
    return (
        step_of(path) is not None
        and path.is_dir()
        and (path / DCP_METADATA).is_file()
        and (path / MANIFEST).is_file()
    )


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(step_of(p), p) for p in root.iterdir() if is_complete(p)]
    return sorted((s, p) for s, p in found if s is not None)


def unfinished_folders(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of partial or half-deleted step folders under ``root``."""
    if not root.is_dir():
        return []
    out = []
    for path in root.iterdir():
        match = _ANY.match(path.name)
        if match and path.is_dir() and not is_complete(path):
            out.append((int(match.group(1)), path))
    return sorted(out)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename or create) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_folder(path: Path) -> None:
    """Rename ``path`` to ``<name>.deleting`` (unless it already is), then delete it."""
    if not path.exists():
        return
    doomed = path
    if not path.name.endswith(DELETING_SUFFIX):
        base = path.name.removesuffix(PARTIAL_SUFFIX)
        doomed = path.with_name(base + DELETING_SUFFIX)
        if doomed.exists():
            shutil.rmtree(doomed)
        os.rename(path, doomed)
    shutil.rmtree(doomed)


def promote(partial: Path, final: Path) -> None:
    """Atomically give a fully written ``partial`` folder its complete name ``final``.

    An existing ``final`` (a complete checkpoint of the same step from an abandoned
    continuation) is moved aside first and deleted only after the rename succeeded.
    """
    replaced = None
    if final.exists():
        replaced = final.with_name(final.name + DELETING_SUFFIX)
        if replaced.exists():
            shutil.rmtree(replaced)
        os.rename(final, replaced)
    os.rename(partial, final)
    fsync_dir(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced)


def prune(root: Path, keep: int, newest: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints up to step ``newest`` (the one
    just saved and verified); returns the deleted folders.

    Checkpoints of later steps (left by a run resumed with an earlier load_step) are never
    deleted here: only a newer complete checkpoint may make an older one redundant.
    """
    complete = [(s, p) for s, p in complete_checkpoints(root) if s <= newest]
    doomed = [path for _, path in complete[: max(0, len(complete) - keep)]]
    for path in doomed:
        remove_folder(path)
    return doomed


def remove_unfinished(root: Path, up_to_step: int) -> list[Path]:
    """Delete partial or half-deleted folders of steps <= ``up_to_step`` (crashed saves)."""
    doomed = [path for step, path in unfinished_folders(root) if step <= up_to_step]
    for path in doomed:
        remove_folder(path)
    return doomed


def folder_bytes(path: Path) -> int:
    """Total size of the regular files in ``path`` (recursively)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
