"""Reading a DCP checkpoint's index and single tensors from it, without loading the rest."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

from trainer.checkpoint.errors import CheckpointError
from trainer.checkpoint.layout import DCP_METADATA
from trainer.checkpoint.safe_read import SafeLoadPlanner, SafeReader, load_metadata

MODEL_PREFIX = "model."
"""Prefix of the model's parameters in the saved state (then the model's own FQN)."""

DCP_ERRORS = (Exception, CheckpointException)
"""What a failed DCP call raises (CheckpointException derives from BaseException)."""


def read_metadata(folder: Path) -> Metadata:
    """DCP's index of ``folder`` (restricted unpickler); a :class:`CheckpointError` otherwise."""
    return load_metadata(Path(folder) / DCP_METADATA)


def tensor_entries(
    metadata: Metadata, prefix: str = MODEL_PREFIX
) -> dict[str, TensorStorageMetadata]:
    """Saved tensors whose key starts with ``prefix``, keyed without the prefix."""
    return {
        key[len(prefix) :]: meta
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }


def saved_shapes(metadata: Metadata, prefix: str = MODEL_PREFIX) -> dict[str, tuple[int, ...]]:
    """Global shape of every saved tensor under ``prefix`` (keys without the prefix)."""
    return {k: tuple(m.size) for k, m in tensor_entries(metadata, prefix).items()}


def load_into(folder: Path, tensors: dict[str, torch.Tensor], no_dist: bool = True) -> None:
    """Fill ``tensors`` (full keys, plain or DTensor targets) from the checkpoint in place.

    Only the requested entries are read. With ``no_dist`` the caller's process reads alone,
    whatever the number of processes that wrote the checkpoint.
    """
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
            warnings.filterwarnings("ignore", message=".*single process.*")
            dcp.load(
                tensors,
                storage_reader=SafeReader(str(folder)),
                planner=SafeLoadPlanner(Path(folder)),
                no_dist=no_dist,
            )
    except DCP_ERRORS as exc:
        refused = inner_checkpoint_error(exc)
        if refused is not None:
            raise refused from None
        raise CheckpointError(
            f"checkpoint {folder} is corrupt or incomplete: reading "
            f"{', '.join(list(tensors)[:3])}{'...' if len(tensors) > 3 else ''} failed "
            f"({first_line(exc)})"
        ) from None


def read_tensor(folder: Path, key: str, meta: TensorStorageMetadata) -> torch.Tensor:
    """One saved tensor (full key) as a plain CPU tensor of its saved dtype."""
    return read_tensors(folder, {key: meta})[key]


def read_tensors(folder: Path, metas: dict[str, TensorStorageMetadata]) -> dict[str, torch.Tensor]:
    """A few saved tensors (full keys) as plain CPU tensors, read in one pass."""
    out = {k: torch.empty(tuple(m.size), dtype=m.properties.dtype) for k, m in metas.items()}
    load_into(folder, dict(out))
    return out


def inner_checkpoint_error(exc: BaseException) -> CheckpointError | None:
    """The CheckpointError a DCP call raised on any rank (DCP wraps them), or None."""
    if isinstance(exc, CheckpointError):
        return exc
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict):
        for inner in failures.values():
            inner = inner[0] if isinstance(inner, tuple) else getattr(inner, "exc", inner)
            if isinstance(inner, CheckpointError):
                return CheckpointError(str(inner))
    return None


def first_line(exc: BaseException) -> str:
    """A one-line description of an exception (DCP wraps per-rank failures in long text)."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        inner = next(iter(failures.values()))
        inner = inner[0] if isinstance(inner, tuple) else getattr(inner, "exc", inner)
        exc = inner if isinstance(inner, BaseException) else exc
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
