"""Exact-size page-locked host tensors for the CPU-offloaded candidate pools.

``torch.empty(..., pin_memory=True)`` goes through CUDA's caching host allocator, which
rounds every block up to a power of two: a 1.5 GiB stack of pools pins 2 GiB. Here the
memory comes from a plain host allocation of exactly the tensor's size and is page-locked
with ``cudaHostRegister``, so non-blocking copies from it are asynchronous and no byte
beyond the tensor is pinned. It is unregistered when the last tensor viewing it is freed.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch


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
    available (a plain CPU tensor otherwise)."""
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
