"""The export's output folder: refuse to clobber, write aside, then swap in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.layout import CHECKPOINT_DIR, DCP_METADATA, MANIFEST


def looks_like_run_data(path: Path) -> bool:
    """A checkpoint or dump folder (never deleted by --overwrite)."""
    return any((path / n).exists() for n in (DCP_METADATA, MANIFEST, CHECKPOINT_DIR))


def check_output(output: Path, checkpoint: Path, overwrite: bool) -> None:
    """Raise unless ``output`` can be (re)written without touching ``checkpoint``."""
    out, ckpt = output.resolve(), checkpoint.resolve()
    if out == ckpt or ckpt in out.parents or out in ckpt.parents:
        raise CheckpointError(
            f"output {output} overlaps the checkpoint {checkpoint}; choose a folder outside it"
        )
    if not output.exists():
        return
    if not overwrite:
        raise CheckpointError(f"output {output} already exists; pass --overwrite to replace it")
    if not output.is_dir():
        raise CheckpointError(f"output {output} exists and is not a folder")
    if looks_like_run_data(output):
        raise CheckpointError(
            f"output {output} holds a checkpoint or a run's dump folder; refusing to replace it"
        )


def staging_folder(output: Path) -> Path:
    """A fresh sibling folder to write into before the swap."""
    tmp = output.parent / f".{output.name}.export-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def swap_in(tmp: Path, output: Path) -> None:
    """Replace ``output`` (if any) by the finished ``tmp`` folder."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.replaced-{os.getpid()}"
        os.rename(output, old)
    os.rename(tmp, output)
    if old is not None:
        shutil.rmtree(old)
