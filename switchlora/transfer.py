"""Host/device staging of a switch step without host-device synchronisations.

- :func:`to_device`, :class:`IndexPack`: host index arrays reach the device in one
  non-blocking copy from pinned memory;
- :class:`SlotBuffers`: a group's persistent per-step buffers (positions, mask, vectors);
- :class:`PoolWrites`: write-backs into CPU-offloaded pools, deferred until the next read;
- :func:`pinned_empty`: exact-size page-locked host memory for those pools.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch


def to_device(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on `device` without a host-device synchronisation.

    On CUDA the array goes through pinned memory with a non-blocking copy (a plain copy from
    pageable memory synchronises the stream: once per call, many calls per switch step).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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


class SlotBuffers:
    """A group's persistent tensors for K slots, with per-layer views made once.

    Positions and the active mask are written on the host into arrays that share memory with
    the device tensors on CPU (no copy at all) or that are pinned and copied in one
    non-blocking transfer on CUDA. The old vectors and the new vectors are read into and
    computed in fixed buffers, so a step allocates (almost) nothing and creates no views.
    """

    def __init__(
        self,
        g: int,
        width: int,
        n_work: int,
        m_local: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        """Buffers of G layers for `width` slots; A rows of width n_work, B columns of m_local."""
        self.width = width
        pinned = device.type == "cuda"
        host_idx = torch.zeros(g, 2 * width, dtype=torch.int64, pin_memory=pinned)
        host_active = torch.zeros(g, width, dtype=torch.bool, pin_memory=pinned)
        self.idx_host, self.active_host = host_idx.numpy(), host_active.numpy()
        if device.type == "cpu":
            self.idx, self.active = host_idx, host_active
        else:
            self.idx = torch.empty_like(host_idx, device=device)
            self.active = torch.empty_like(host_active, device=device)
        self._host = (host_idx, host_active)
        self._copied: torch.cuda.Event | None = None
        self.idx_ab = list(self.idx.unbind(0))
        self.idx_a = [x[:width] for x in self.idx_ab]
        self.idx_b = [x[width:] for x in self.idx_ab]
        # zeros: rows of layers that do not switch in a step keep old (finite) values
        self.a_sel = torch.zeros(g, 2 * width, n_work, dtype=dtype, device=device)
        self.b_sel = torch.zeros(g, m_local, 2 * width, dtype=dtype, device=device)
        self.new_a = torch.zeros(g, width, n_work, dtype=dtype, device=device)
        self.new_b = torch.zeros(g, m_local, width, dtype=dtype, device=device)
        self.a_sel_rows = list(self.a_sel.unbind(0))
        self.b_sel_cols = list(self.b_sel.unbind(0))
        self.new_a_rows = list(self.new_a.unbind(0))
        self.new_b_cols = list(self.new_b.unbind(0))

    def fill(self, idx_a: np.ndarray, idx_b: np.ndarray, active: np.ndarray) -> None:
        """Write this step's positions and mask on the host (after the last copy finished)."""
        if self._copied is not None:
            self._copied.synchronize()
        self.idx_host[:, : self.width] = idx_a
        self.idx_host[:, self.width :] = idx_b
        self.active_host[:] = active

    def upload(self) -> None:
        """Move them to the device (nothing to do on CPU)."""
        if self.idx.device.type == "cpu":
            return
        self.idx.copy_(self._host[0], non_blocking=True)
        self.active.copy_(self._host[1], non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()


@dataclass
class _PendingWrite:
    """A pool write-back waiting for its device-to-host copy."""

    pool: torch.Tensor
    index: torch.Tensor
    rows: torch.Tensor
    copied: torch.cuda.Event | None


class PoolWrites:
    """Write-backs into flat pools [entries, width], now or deferred.

    With ``pool_offload_cpu`` the pools live in host memory while the outgoing vectors are on
    the device; writing them back at once would make the host wait for the device in every
    switching step. Deferred, they are copied to pinned memory without waiting and written
    into the pool before the next switch reads it (or before the pools are saved or loaded).
    Only an entry released and read back in the same step (:func:`comes_back`) cannot wait.
    """

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


def caching_allocator_bytes(nbytes: int) -> int:
    """Bytes the caching host allocator pins for a request of ``nbytes`` (next power of 2)."""
    return 1 << (nbytes - 1).bit_length() if nbytes > 0 else 0


def _register(ptr: int, nbytes: int) -> None:
    from torch.cuda._pin_memory_utils import pin_memory

    pin_memory(ptr, nbytes)


def _unregister(ptr: int) -> None:
    from torch.cuda._pin_memory_utils import unpin_memory

    unpin_memory(ptr)


def pinned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor of exactly ``shape`` x ``dtype``, page-locked when CUDA is
    available (a plain CPU tensor otherwise).

    ``torch.empty(..., pin_memory=True)`` goes through CUDA's caching host allocator, which
    rounds every block up to a power of two (a 1.5 GiB stack of pools pins 2 GiB). Here the
    memory is a plain host allocation of exactly the tensor's size, page-locked with
    ``cudaHostRegister`` and unregistered when the last tensor viewing it is freed.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    if not torch.cuda.is_available() or nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    # numpy owns the memory and the tensor's storage keeps the array alive: the array is
    # freed only with the last view, and its finaliser unregisters the pages right before.
    owner = np.empty(nbytes, dtype=np.uint8)
    ptr = owner.ctypes.data
    _register(ptr, nbytes)
    weakref.finalize(owner, _unregister, ptr)
    return torch.from_numpy(owner).view(dtype).view(shape)
