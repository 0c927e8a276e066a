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
def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 norm of all gradients (sharded ones included); clip to ``max_norm`` if > 0.

    Returns the norm before clipping as a plain local tensor (no host sync).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(grads, max_norm, total, foreach=True)
    return total
