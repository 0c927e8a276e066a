"""How many vectors switch per step: interval schedule, stochastic rounding, slot count."""

from __future__ import annotations

import math

import numpy as np

MIN_RATE = 1e-8
"""Floor of the switch-rate multiplier 0.3^((t+1)/(ratio*T)) (caps the interval)."""


def switch_rate(t: int, descent_ratio: float, total_steps: int) -> float:
    """Multiplier of the switch frequency at 0-based step t: 0.3^((t+1)/(ratio*T)), >= 1e-8."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    exponent = (t + 1) / (descent_ratio * total_steps)
    return max(0.3**exponent, MIN_RATE)


def interval(
    t: int, interval0: float, descent_ratio: float, total_steps: int, fixed: bool = False
) -> float:
    """interval(t) = interval0 * 0.3^(-(t+1)/(ratio*T)) (interval0 when fixed)."""
    if fixed:
        return float(interval0)
    return interval0 / switch_rate(t, descent_ratio, total_steps)


def expected_switches(rank: int, interval_t: float) -> float:
    """Expected vectors switched per step per factor per layer: r / interval(t)."""
    return rank / interval_t


def stochastic_round(x: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` independent stochastic roundings of x ([count] int64): floor(x) plus 1 with
    probability frac(x). Consumes exactly `count` rng.random() draws."""
    low = math.floor(x)
    return low + (rng.random(count) < x - low).astype(np.int64)


def max_slots(rank: int, interval0: float) -> int:
    """K_max = min(r // 2, ceil(r / interval0)): static switch slots per factor per layer.

    interval(t) >= interval0, so stochastic_round(r / interval(t)) <= ceil(r / interval0);
    K <= r // 2 keeps the A window [pA, pA+K) and the B window [pA + r//2, ...) disjoint.
    """
    return max(0, min(rank // 2, math.ceil(rank / interval0)))
