"""Candidate sources: where the vectors that are switched in come from.

"pool": C = min(m, n) stored entries per factor per layer (pool_A [C, n], pool_B [C, m]).
The host keeps which entry each position holds (`use`), a ring pointer for the sequential
walk and, for the random choice, a numpy Generator owned by the controller. Per step the
outgoing trained vectors are written back into their entries (when enabled) BEFORE the
incoming entries are read, so an entry released this step can come straight back.

"seeded": no stored bank; the K incoming vectors for (layer, factor, step) are drawn from a
torch.Generator keyed by (seed, layer, factor, step), with the pool's distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from switchlora.seeding import CANDIDATE_STREAM, torch_generator, uniform

FACTOR_A = 0
"""Seed key of lora_A in seeded draws."""

FACTOR_B = 1
"""Seed key of lora_B in seeded draws."""


def pool_size(m: int, n: int) -> int:
    """C = min(m, n): number of candidates per factor of an m x n layer."""
    return min(m, n)


def layer_switchable(m: int, n: int, r: int) -> bool:
    """A layer can switch only when its pool has more entries than the rank."""
    return pool_size(m, n) > r


@dataclass
class PoolFactor:
    """Pool of one factor of one layer: local rows and the host-side choice state."""

    entries: torch.Tensor
    """Local part of the pool, [C, local width]; on the compute device or in CPU memory."""

    use: np.ndarray
    """[r] int64: the pool entry held by each position of the factor."""

    next: int
    """Ring pointer of the sequential walk: the next entry handed out."""

    @property
    def size(self) -> int:
        """C: number of pool entries."""
        return self.entries.shape[0]


def random_choice(
    factor: PoolFactor, positions: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Release the entries held at `positions` and draw new ones; returns (old, new).

    A uniform draw without replacement among the entries no other position holds (entries
    released by `positions` included), consuming `rng`. Updates factor.use in place.
    """
    k = len(positions)
    old = factor.use[positions].copy()
    c = factor.size
    busy = np.ones(len(factor.use), dtype=bool)
    busy[positions] = False
    free = np.setdiff1d(np.arange(c, dtype=np.int64), factor.use[busy])
    new = rng.choice(free, size=k, replace=False).astype(np.int64)
    factor.use[positions] = new
    return old, new


def sequential_choice(
    use: np.ndarray,
    nexts: np.ndarray,
    positions: np.ndarray,
    active: np.ndarray,
    size: int,
    switching: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sequential pool walk of G pools at once: each gets the next k_g entries of its ring
    (next, next + 1, ... mod C).

    use [G, r] (updated in place), nexts [G] ring pointers, positions [G, K], active [G, K]
    (the first k_g slots of row g), size C, `switching` np.nonzero(active) if already known.
    Returns (old, new, nexts after): old [G, K] the released entries (-1 on inactive slots),
    new [G, K] the incoming ones (0 on inactive slots).
    """
    layer, slot = np.nonzero(active) if switching is None else switching
    old = np.full(positions.shape, -1, np.int64)
    new = np.zeros(positions.shape, np.int64)
    held = positions[layer, slot]
    old[layer, slot] = use[layer, held]
    new[layer, slot] = (nexts[layer] + slot) % size
    use[layer, held] = new[layer, slot]
    return old, new, (nexts + active.sum(axis=1)) % size


def seeded_candidates(
    seed: int,
    layer_index: int,
    factor: int,
    step: int,
    slots: int,
    length: int,
    bound: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """[slots, length] incoming vectors of (layer, factor, step): U(-bound, bound), rank independent."""
    generator = torch_generator(device, seed, CANDIDATE_STREAM, layer_index, factor, step)
    return uniform(slots, length, bound, generator, device)
