"""Fixed-length training windows over a flat token stream."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset


def _is_whole_file_map(arr: np.ndarray) -> bool:
    """True when ``arr`` is a memmap of an entire file, so it can be reopened by path."""
    return (
        isinstance(arr, np.memmap)
        and arr.filename is not None
        and arr.offset == 0
        and arr.ndim == 1
        and os.path.isfile(arr.filename)
        and arr.nbytes == os.path.getsize(arr.filename)
    )


class TokenWindows(Dataset):
    """Non-overlapping windows of ``seq_len + 1`` tokens as int64 tensors.

    Window ``i`` covers ``tokens[i * (seq_len + 1) : (i + 1) * (seq_len + 1)]``; a trailing
    remainder shorter than a window is unused. The extra token makes the shifted target.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if tokens.ndim != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.window = seq_len + 1

    def __len__(self) -> int:
        return len(self.tokens) // self.window

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"window {index} out of range for {n} windows")
        start = index * self.window
        return torch.from_numpy(self.tokens[start : start + self.window].astype(np.int64))

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes started by spawn/forkserver get the file path, not a copy of the data.
        state = dict(self.__dict__)
        if _is_whole_file_map(self.tokens):
            state["tokens"] = (
                "memmap",
                self.tokens.filename,
                self.tokens.dtype.str,
                len(self.tokens),
            )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        tokens = state["tokens"]
        if isinstance(tokens, tuple) and tokens[0] == "memmap":
            _, filename, dtype, n = tokens
            state["tokens"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=(n,))
        self.__dict__.update(state)


def build_windows(arrays: Sequence[np.ndarray], seq_len: int) -> Dataset:
    """Windows over several token arrays (e.g. shard files); windows never span two arrays."""
    parts = [TokenWindows(a, seq_len) for a in arrays]
    parts = [p for p in parts if len(p) > 0]
    if not parts:
        return TokenWindows(np.zeros(0, dtype=np.int64), seq_len)
    if len(parts) == 1:
        return parts[0]
    return ConcatDataset(parts)


def collate_windows(windows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack windows of ``L + 1`` tokens into next-token ``input``/``target`` of shape [B, L].

    Padding (IGNORE_INDEX of trainer.data.padded, data.packing = "pad") stays in the targets, where the loss skips
    it, and is read as token 0 in the inputs.
    """
    w = torch.stack(windows)
    return {"input": w[:, :-1].clamp_min(0), "target": w[:, 1:].contiguous()}
