"""Validation by token budget: exactly N target tokens, the same ones on any number of ranks.

The budget walks the validation windows in order and takes the first ``N`` targets that count
in the loss (padding excluded): windows ``0 .. k-1`` in full, except that the last one keeps
only its first ``N - (targets of windows 0 .. k-2)`` targets (the rest are set to the ignore
index). The ``k`` windows are dealt to ranks round-robin; every rank runs the same number of
batches (a rank that has run out evaluates window 0 with every target ignored), so the FSDP2
collectives of the forward passes match on every rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data.padded import IGNORE_INDEX, target_counts
from trainer.data.windows import collate_windows

Batch = dict[str, torch.Tensor]


def budget_windows(counts: np.ndarray, budget: int) -> tuple[int, int]:
    """(k, kept): the first k windows hold ``budget`` targets when window k-1 keeps ``kept``.

    Raises ValueError when the windows hold fewer than ``budget`` targets.
    """
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    cumulative = np.cumsum(counts)
    available = int(cumulative[-1]) if len(cumulative) else 0
    if available < budget:
        raise ValueError(
            f"the validation split holds {available:,} target tokens, fewer than {budget:,}"
        )
    k = int(np.searchsorted(cumulative, budget)) + 1  # first window where the total reaches it
    before = int(cumulative[k - 2]) if k > 1 else 0
    return k, budget - before


class TokenBudgetBatches:
    """This rank's validation batches of a token budget (re-iterable, the same every time)."""

    def __init__(
        self,
        windows: Dataset,
        local_batch_size: int,
        dp_rank: int,
        dp_world: int,
        max_tokens: int,
    ) -> None:
        if local_batch_size < 1:
            raise ValueError(f"local_batch_size must be >= 1, got {local_batch_size}")
        k, self.last_kept = budget_windows(target_counts(windows), max_tokens)
        self.last = k - 1
        self.indices = list(range(dp_rank, k, dp_world))
        per_rank = -(-k // dp_world)  # the most windows any rank holds
        self.n_batches = -(-per_rank // local_batch_size)
        self.windows = windows
        self.local_batch_size = local_batch_size

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[Batch]:
        b = self.local_batch_size
        for n in range(self.n_batches):
            chunk = self.indices[n * b : (n + 1) * b]
            batch = collate_windows([self.windows[i] for i in chunk] or [self.windows[0]])
            target = batch["target"]
            if not chunk:
                target.fill_(IGNORE_INDEX)  # keeps this rank in step with the others
            for row, i in enumerate(chunk):
                if i == self.last:
                    target[row, self.last_kept :] = IGNORE_INDEX
            yield batch
