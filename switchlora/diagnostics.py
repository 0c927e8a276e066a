"""Effective rank of the update a layer has accumulated since initialisation.

SwitchLoRA's claim is that switching lets a low-rank adapter build a full-rank update of the
effective weight W + s*B*A. The accumulated update of a layer is

    D = (W_now + s * B_now @ A_now) - W_eff_init,

where W_eff_init is the effective weight at step 0. In this project the effective init of
every method equals the dense model's init of the same projection (W0 = W_init - s*B0*A0 for
LoRA/SwitchLoRA, B0 = 0 for ReLoRA), so D = W_now - W_init + s*B_now*A_now. A plain LoRA run
keeps rank(D) <= 2r (W never changes); switching folds rank-1 corrections into W, so rank(D)
can grow towards min(m, n).

Measures of a singular-value spectrum sigma_1 >= ... >= sigma_k >= 0:

- entropy effective rank (Roy & Vetterli, 2007): exp(H(p)), p_i = sigma_i / sum(sigma);
- stable rank: sum(sigma^2) / sigma_1^2;
- numerical rank: #{i : sigma_i > rtol * sigma_1};
- energy rank: the smallest k whose top-k singular values hold ``energy`` of sum(sigma^2).

All are 0 for a zero update, and equal k for an update with k equal non-zero singular values
(the energy rank then needs energy > (k-1)/k). The measures are relative to sigma_1: an update
that is only rounding noise (e.g. at step 0, where W0 = W_init - s*B0*A0 was rounded to fp32)
looks full-rank; its ``frobenius`` (~1e-7) says that it is numerically zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

NUMERICAL_RTOL = 1e-3
"""Default relative threshold of the numerical rank (fp32 cancellation noise is far below)."""

ENERGY = 0.9
"""Default share of sum(sigma^2) for the energy rank."""


def accumulated_update(
    w_now: torch.Tensor,
    w_init: torch.Tensor,
    lora_a: torch.Tensor | None = None,
    lora_b: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """D = W_now - W_init + scale * B @ A (float32); without A and B, D = W_now - W_init."""
    update = w_now.float() - w_init.float()
    if lora_a is not None and lora_b is not None:
        update = update + scale * (lora_b.float() @ lora_a.float())
    return update


def singular_values(update: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D tensor, descending, float32 on the CPU."""
    if update.dim() != 2:
        raise ValueError(f"expected a 2-D update, got shape {tuple(update.shape)}")
    return torch.linalg.svdvals(update.float()).cpu()


def entropy_rank(sv: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values (0 for a zero spectrum)."""
    total = float(sv.sum())
    if total <= 0.0:
        return 0.0
    p = sv[sv > 0].double() / total
    return math.exp(float(-(p * p.log()).sum()))


def stable_rank(sv: torch.Tensor) -> float:
    """sum(sigma^2) / sigma_max^2 (0 for a zero spectrum)."""
    top = float(sv.max()) if sv.numel() else 0.0
    if top <= 0.0:
        return 0.0
    return float((sv.double() ** 2).sum()) / top**2


def numerical_rank(sv: torch.Tensor, rtol: float = NUMERICAL_RTOL) -> int:
    """Number of singular values above ``rtol`` times the largest."""
    top = float(sv.max()) if sv.numel() else 0.0
    if top <= 0.0:
        return 0
    return int((sv > rtol * top).sum())


def energy_rank(sv: torch.Tensor, energy: float = ENERGY) -> int:
    """Smallest k such that the top-k singular values hold ``energy`` of sum(sigma^2)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    power = sv.double().sort(descending=True).values ** 2
    total = float(power.sum())
    if total <= 0.0:
        return 0
    cumulative = power.cumsum(0) / total
    return min(int((cumulative < energy - 1e-12).sum()) + 1, power.numel())


@dataclass(frozen=True)
class RankSummary:
    """Rank measures of one layer's accumulated update."""

    shape: tuple[int, int]
    """(m, n) of the update."""
    max_rank: int
    """min(m, n): the rank of a full-rank update."""
    entropy_rank: float
    stable_rank: float
    numerical_rank: int
    energy_rank: int
    frobenius: float
    """||D||_F: the size of the update."""

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


def summarize(
    update: torch.Tensor, rtol: float = NUMERICAL_RTOL, energy: float = ENERGY
) -> tuple[RankSummary, torch.Tensor]:
    """Rank measures and the singular values of ``update``."""
    sv = singular_values(update)
    m, n = update.shape
    summary = RankSummary(
        shape=(m, n),
        max_rank=min(m, n),
        entropy_rank=entropy_rank(sv),
        stable_rank=stable_rank(sv),
        numerical_rank=numerical_rank(sv, rtol),
        energy_rank=energy_rank(sv, energy),
        frobenius=float(sv.double().pow(2).sum().sqrt()),
    )
    return summary, sv
