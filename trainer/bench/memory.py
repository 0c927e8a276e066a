"""Memory a training run holds on this rank: parameters, gradients, optimizer state, peak.

Sizes are counted from the live tensors (local shards of DTensors), not from formulas.
"""

from __future__ import annotations

import resource

import torch
from torch import nn

MIB = 2**20


def local_bytes(t: torch.Tensor) -> int:
    """Bytes of this rank's part of a tensor (the local shard of a DTensor)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    inner = getattr(local, "_tensor", None)  # a torchao float8 weight wrapper
    if isinstance(inner, torch.Tensor):
        local = inner
    return local.numel() * local.element_size()


def parameter_bytes(model: nn.Module) -> dict[str, int]:
    """Local bytes of trainable and of frozen parameters."""
    trainable = frozen = 0
    for p in model.parameters():
        if p.requires_grad:
            trainable += local_bytes(p)
        else:
            frozen += local_bytes(p)
    return {"trainable": trainable, "frozen": frozen}


def gradient_bytes(model: nn.Module) -> int:
    """Local bytes of the gradients that exist right now (call between backward and zero_grad)."""
    return sum(local_bytes(p.grad) for p in model.parameters() if p.grad is not None)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Local bytes of every tensor in the optimizer state (moments, step counts)."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += local_bytes(value)
    return total


def reset_peak(device: torch.device) -> None:
    """Start a new peak measurement (CUDA only; a CPU process peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int:
    """Peak allocated CUDA memory since :func:`reset_peak`, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
