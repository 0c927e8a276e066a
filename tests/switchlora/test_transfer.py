"""Exact-size pinned pools: the registration calls, their sizes and the unregistration.

CUDA is faked (availability and the cudaHostRegister / cudaHostUnregister calls recorded):
the real page-locking is checked on a GPU by tests/gpu (offloaded pools are pinned).
"""

from __future__ import annotations

import gc

import pytest
import torch

from switchlora import transfer


@pytest.fixture
def fake_cuda(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transfer, "_register", lambda p, n: calls.append(("register", p, n)))
    monkeypatch.setattr(transfer, "_unregister", lambda p: calls.append(("unregister", p)))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pinned_empty_registers_exactly_its_bytes_until_the_last_view_is_freed(fake_cuda, dtype):
    shape = (3, 5, 7)
    t = transfer.pinned_empty(shape, dtype)
    assert t.shape == shape and t.dtype == dtype and t.device.type == "cpu"
    nbytes = 3 * 5 * 7 * t.element_size()
    assert fake_cuda == [("register", t.data_ptr(), nbytes)]
    assert t.untyped_storage().nbytes() == nbytes
    t.fill_(1.5)
    row = t[1]
    del t
    gc.collect()
    assert len(fake_cuda) == 1  # a view still holds the memory
    assert torch.equal(row, torch.full((5, 7), 1.5, dtype=dtype))
    ptr = fake_cuda[0][1]
    del row
    gc.collect()
    assert fake_cuda[1:] == [("unregister", ptr)]


def test_without_cuda_a_plain_tensor(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    called = []
    monkeypatch.setattr(transfer, "_register", lambda *a: called.append(a))
    t = transfer.pinned_empty((4, 4), torch.float32)
    assert t.shape == (4, 4) and not called


def test_caching_allocator_rounds_to_a_power_of_two():
    assert transfer.caching_allocator_bytes(3 << 29) == 1 << 31  # 1.5 GiB pins 2 GiB
    assert transfer.caching_allocator_bytes(1 << 20) == 1 << 20
    assert transfer.caching_allocator_bytes(1) == 1
