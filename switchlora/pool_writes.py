"""Pool write-backs of CPU-offloaded pools, applied without a device sync per step.

With ``pool_offload_cpu`` the pools live in host memory while the vectors leaving A and B are
on the device. Writing them back at once would make the host wait for the device in every
switching step; instead they are copied to pinned host memory without waiting and written
into the pool before the next switch reads it (or before the pools are saved or loaded).
Only when an entry released in a step is read back in the same step must the write-back
happen at once (:func:`comes_back`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class _PendingWrite:
    """A pool write-back waiting for its device-to-host copy."""

    pool: torch.Tensor
    index: torch.Tensor
    rows: torch.Tensor
    copied: torch.cuda.Event | None


class PoolWrites:
    """Write-backs into flat pools [entries, width], now or deferred."""

    def __init__(self) -> None:
        self._pending: list[_PendingWrite] = []

    def write(
        self, pool: torch.Tensor, index: torch.Tensor, rows: torch.Tensor, defer: bool
    ) -> None:
        """pool[index] = rows, now, or (`defer`) at the next :meth:`flush`."""
        if not defer:
            pool.index_copy_(0, index, rows.to(pool.device))
            return
        if rows.device.type == "cpu":
            self._pending.append(_PendingWrite(pool, index, rows, None))
            return
        staged = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
        staged.copy_(rows, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        self._pending.append(_PendingWrite(pool, index, staged, copied))

    def flush(self) -> None:
        """Apply the deferred write-backs (waits for their device-to-host copies)."""
        for write in self._pending:
            if write.copied is not None:
                write.copied.synchronize()
            write.pool.index_copy_(0, write.index, write.rows)
        self._pending.clear()


def comes_back(
    old: np.ndarray | None, new: np.ndarray | None, layer: np.ndarray, slot: np.ndarray
) -> bool:
    """Whether any layer reads back, in this step, a pool entry it released in this step."""
    if old is None or new is None or len(layer) == 0:
        return False
    released = set(zip(layer.tolist(), old[layer, slot].tolist()))
    return any(pair in released for pair in zip(layer.tolist(), new[layer, slot].tolist()))
