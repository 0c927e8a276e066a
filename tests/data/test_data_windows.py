"""Token windows: count, contents, dtype, pickling of memory maps."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.data.windows import TokenWindows, build_windows


def test_windows_in_memory() -> None:
    tokens = np.arange(23, dtype=np.uint16)
    ds = TokenWindows(tokens, seq_len=4)
    assert len(ds) == 23 // 5
    assert ds[0].tolist() == [0, 1, 2, 3, 4]
    assert ds[3].tolist() == [15, 16, 17, 18, 19]
    assert ds[-1].tolist() == ds[3].tolist()
    assert ds[1].dtype == torch.int64
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ValueError, match="seq_len"):
        TokenWindows(tokens, 0)


def test_windows_over_memmap_pickle(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    np.arange(100, dtype=np.uint32).tofile(path)
    ds = TokenWindows(np.memmap(path, dtype=np.uint32, mode="r"), seq_len=9)
    blob = pickle.dumps(ds)
    assert len(blob) < 1000  # the path travels, not the data
    copy = pickle.loads(blob)
    assert isinstance(copy.tokens, np.memmap)
    assert [copy[i].tolist() for i in range(len(copy))] == [ds[i].tolist() for i in range(10)]


def test_build_windows_concat_and_empty() -> None:
    a, b = np.arange(12), np.arange(100, 107)
    ds = build_windows([a, np.zeros(0, dtype=np.int64), b], seq_len=2)
    assert len(ds) == 4 + 2
    assert ds[4].tolist() == [100, 101, 102]
    assert len(build_windows([], seq_len=2)) == 0
