"""Host index arrays of one switch step, sent to the device with a single copy."""

from __future__ import annotations

import numpy as np
import torch

from switchlora.candidates import to_device


class IndexPack:
    """Collects int64 host arrays; :meth:`send` moves them all at once (zero-copy on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._arrays: list[np.ndarray] = []
        self._tensors: list[torch.Tensor] | None = None
        self._host: dict[int, torch.Tensor] = {}

    def add(self, values: np.ndarray) -> int:
        """Queue an array; returns the handle that :meth:`get` takes after :meth:`send`."""
        self._arrays.append(np.ascontiguousarray(values, dtype=np.int64))
        return len(self._arrays) - 1

    def add_host(self, values: np.ndarray) -> int:
        """Queue an array that stays in host memory (indices of CPU-offloaded pools)."""
        self._host[len(self._arrays)] = torch.from_numpy(
            np.ascontiguousarray(values, dtype=np.int64)
        )
        self._arrays.append(np.zeros(0, np.int64))
        return len(self._arrays) - 1

    def send(self) -> None:
        """One host-to-device copy of every queued array (non-blocking from pinned memory)."""
        if self.device.type == "cpu":
            self._tensors = [torch.from_numpy(a) for a in self._arrays]
            return
        sizes = [a.size for a in self._arrays]
        host = np.concatenate([a.reshape(-1) for a in self._arrays] or [np.zeros(0, np.int64)])
        flat = to_device(host, self.device)
        pieces = flat.split(sizes)
        self._tensors = [p.view(a.shape) for p, a in zip(pieces, self._arrays)]

    def get(self, handle: int) -> torch.Tensor:
        """The device tensor of a queued array."""
        assert self._tensors is not None, "send() first"
        if handle in self._host:
            return self._host[handle]
        return self._tensors[handle]
