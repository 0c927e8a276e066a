"""Starting a DCP save in the background and waiting for its two phases.

``dcp.async_save`` first stages the state (copies it to CPU memory), then writes it from a
background thread. On CUDA the staging itself runs asynchronously (pinned memory,
non-blocking copies) and the training loop must wait for it before the parameters change
again; on CPU staging finishes inside the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.tensor import DTensor


@dataclass
class PendingSave:
    """A save of ``step`` into ``folder`` whose upload may still be running."""

    step: int
    folder: Any
    staging: Any
    """Future of the staging copy, or None when staging already finished."""
    upload: Any
    """Future that completes when every file (and, on the coordinator, .metadata) is written."""
    stager: Any
    """The stager this save created (closed once the upload is done), or None."""
    started: float
    """time.perf_counter() at the start of the save."""
    describe: Any
    """Called with the folder's file sizes once written; returns the manifest."""
    blocking_s: float = 0.0
    """Seconds the training loop was held up by this save."""


def _stager(device: torch.device) -> Any:
    """An asynchronous stager with pinned memory on CUDA; None (the default stager) elsewhere."""
    if device.type != "cuda":
        return None
    try:
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
    except ImportError:  # older torch: staging happens inside async_save
        return None
    return DefaultStager(StagingOptions(True, False, True, True))


def start_async_save(
    state: dict[str, Any],
    writer: Any,
    group: dist.ProcessGroup | None,
    device: torch.device,
) -> tuple[Any, Any, Any]:
    """Begin the save; returns (staging future or None, upload future, stager or None)."""
    stager = _stager(device)
    kwargs = {"async_stager": stager} if stager is not None else {}
    state = _own_storage(state)
    result = dcp.async_save(state, storage_writer=writer, process_group=group, **kwargs)
    staging = getattr(result, "staging_completion", None)
    upload = getattr(result, "upload_completion", result)
    return staging, upload, stager


def _own_storage(state: Any) -> Any:
    """`state` with every CPU DTensor whose local data is an offset view replaced by a copy.

    Staging deep-copies CPU DTensors, and deepcopy fails on a DTensor whose local tensor starts
    inside a larger storage (the optimizer's stacked LoRA moments, the stacked candidate
    pools). The copy is what staging would have made anyway.
    """
    if isinstance(state, dict):
        return {key: _own_storage(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_own_storage(value) for value in state]
    if isinstance(state, DTensor):
        data = state._local_tensor
        if data.device.type == "cpu" and data.storage_offset() != 0:
            return DTensor(data.clone(), state._spec, requires_grad=False)
    return state
