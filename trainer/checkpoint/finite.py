"""Refusing to checkpoint non-finite values: a NaN or Inf saved would be resumed from."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def floating_tensors(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Key path -> local data of every floating-point tensor in a nested state dict."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, dict):
        for key, value in state.items():
            out.update(floating_tensors(value, f"{prefix}{key}."))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            out.update(floating_tensors(value, f"{prefix}{index}."))
    elif isinstance(state, torch.Tensor):
        data = state.to_local() if isinstance(state, DTensor) else state
        if data.is_floating_point() or data.is_complex():
            out[prefix.rstrip(".")] = data
    return out


def non_finite_keys(state: dict[str, Any], device: torch.device) -> list[str]:
    """Keys of tensors holding a NaN or Inf on any rank (every rank gets the same list).

    Every rank must call with the same structure of floating tensors (model, optimizer and
    method state are; per-rank entries are JSON text).
    """
    tensors = floating_tensors(state)
    if not tensors:
        return []
    flags = torch.stack(
        [
            (~torch.isfinite(t)).any().to(device)
            if t.numel()
            else torch.zeros((), dtype=torch.bool, device=device)
            for t in tensors.values()
        ]
    ).to(torch.int32)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [key for key, flag in zip(tensors, flags.tolist()) if flag]
