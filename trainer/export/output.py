"""The export's output folder: refuse to clobber, write aside, then swap in.

Every export leaves a marker file in its folder; ``--overwrite`` replaces only an empty
folder or one holding that marker, so it never deletes files the exporter did not write.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.layout import CHECKPOINT_DIR, DCP_METADATA, MANIFEST

MARKER = ".written-by-trainer-export"
"""File in every export folder; its presence lets --overwrite replace the folder."""


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
    if any(output.iterdir()) and not (output / MARKER).is_file():
        raise CheckpointError(
            f"output {output} holds files this exporter did not write (no {MARKER}); "
            "refusing to replace it: choose another --output or empty the folder yourself"
        )


def staging_folder(output: Path) -> Path:
    """A fresh sibling folder to write into before the swap."""
    tmp = output.parent / f".{output.name}.export-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / MARKER).write_text("written by scripts/export.py; --overwrite may replace this folder\n")
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
