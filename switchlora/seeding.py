"""Rank-independent random draws: seeds derived from small integer keys, one stream per use."""

from __future__ import annotations

import numpy as np
import torch

INIT_STREAM = 0
"""Key tag of the per-layer init generator (pools, A0, B0)."""

CANDIDATE_STREAM = 1
"""Key tag of the seeded candidate source."""

DECISION_STREAM = 2
"""Key tag of the numpy generator that draws the number of switched vectors."""

CHOICE_STREAM = 3
"""Key tag of the numpy generator of the random pool choice."""


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys (numpy SeedSequence hashing)."""
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def torch_generator(device: torch.device | str, *keys: int) -> torch.Generator:
    """A torch.Generator on `device` seeded from keys: identical on every rank."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*keys))
    return generator


def numpy_generator(*keys: int) -> np.random.Generator:
    """A numpy Generator seeded from keys: identical on every rank."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def uniform(
    rows: int, cols: int, bound: float, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """A float32 [rows, cols] tensor drawn from U(-bound, +bound) with `generator`."""
    draw = torch.rand(rows, cols, generator=generator, device=device, dtype=torch.float32)
    return (draw * 2.0 - 1.0) * bound
