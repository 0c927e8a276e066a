"""Optimizer construction and gradient clipping for (possibly DTensor) parameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.distributed.tensor import DTensor

from trainer.config import Optimizer as OptimizerConfig


def build_adamw(
    params: list[torch.nn.Parameter], cfg: OptimizerConfig, device: torch.device
) -> torch.optim.AdamW:
    """torch.optim.AdamW with the kernel chosen by ``cfg.implementation``."""
    impl = cfg.implementation
    if impl == "auto":
        impl = "fused" if device.type == "cuda" else "foreach"
    return torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        fused=impl == "fused",
        foreach=impl == "foreach",
    )


@torch.no_grad()
def grad_norm(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Global L2 norm of the gradients of ``params`` over every rank, as a plain local tensor.

    FSDP2 gradients are DTensor shards: their norm is reduced across the mesh (one
    all-reduce), so every rank returns the same value. No host sync.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    return total


@torch.no_grad()
def clip_grads_(params: Iterable[torch.nn.Parameter], max_norm: float, total: torch.Tensor) -> None:
    """Scale the gradients of ``params`` in place by min(1, max_norm / total); 0 disables.

    ``total`` is :func:`grad_norm` of the same parameters. ``clip_grads_with_norm_`` reads
    ``.grad`` of what it is given, so it gets the parameters, not the gradients.
    """
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(list(params), max_norm, total, foreach=True)
