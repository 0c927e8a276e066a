"""data.packing = "pad": one sequence per document, truncated and padded to the sequence length.

GaLore's data recipe: every document (its tokens and the EOS that ends it) becomes one window
of ``seq_len + 1`` tokens, cut after ``seq_len + 1`` tokens (the rest of a longer document is
dropped) or padded with :data:`IGNORE_INDEX`. The padded targets are excluded from the loss
(``F.cross_entropy``'s default ignore index) and from the token counts that normalise it;
padded inputs are read as token 0, which changes nothing: padding only follows a document, so
under causal attention no real position sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from trainer.data.windows import TokenWindows, build_windows

IGNORE_INDEX = -100
"""Padding in a window and in its targets: F.cross_entropy ignores this target."""

Packing = Literal["packed", "pad"]


class PaddedDocuments(Dataset):
    """Window ``i``: document ``i`` of the token arrays (EOS included), cut to ``seq_len + 1``
    tokens and padded with IGNORE_INDEX. Documents end at each EOS; a document may continue
    from one array (shard file) into the next. Documents without a target (only an EOS) are
    skipped."""

    def __init__(self, arrays: Sequence[np.ndarray], eos_id: int, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.arrays = [a for a in arrays if len(a)]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        total = int(self.offsets[-1])
        ends = [
            np.flatnonzero(np.asarray(a) == eos_id) + 1 + o
            for a, o in zip(self.arrays, self.offsets)
        ]
        ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
        if total and (len(ends) == 0 or ends[-1] < total):  # a last document without an EOS
            ends = np.append(ends, total)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        lengths = np.minimum(ends - starts, seq_len + 1)
        keep = lengths >= 2
        self.starts = starts[keep]
        self.lengths = lengths[keep].astype(np.int64)
        self.seq_len = seq_len
        self.window = seq_len + 1

    def __len__(self) -> int:
        return len(self.starts)

    def _read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) of the concatenated arrays."""
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts = []
        while n > 0:
            lo = start - int(self.offsets[i])
            piece = self.arrays[i][lo : lo + n]
            parts.append(np.asarray(piece, dtype=np.int64))
            n -= len(piece)
            start += len(piece)
            i += 1
        return np.concatenate(parts)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"document {index} out of range for {len(self)} documents")
        out = torch.full((self.window,), IGNORE_INDEX, dtype=torch.int64)
        n = int(self.lengths[index])
        out[:n] = torch.from_numpy(self._read(int(self.starts[index]), n))
        return out

    def target_counts(self) -> np.ndarray:
        """Targets that count in the loss, per window (padding excluded)."""
        return self.lengths - 1


def build_split(
    arrays: Sequence[np.ndarray], seq_len: int, packing: Packing, eos_id: int
) -> Dataset:
    """The windows of one split: packed (consecutive windows of the token stream) or padded."""
    if packing == "pad":
        return PaddedDocuments(arrays, eos_id, seq_len)
    if packing != "packed":
        raise ValueError(f"packing must be 'packed' or 'pad', got {packing!r}")
    return build_windows(arrays, seq_len)


def target_counts(windows: Dataset) -> np.ndarray:
    """Targets that count in the loss in each window of ``windows``, in order."""
    if isinstance(windows, ConcatDataset):
        parts = [target_counts(d) for d in windows.datasets]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if isinstance(windows, PaddedDocuments):
        return windows.target_counts()
    if isinstance(windows, TokenWindows):
        return np.full(len(windows), windows.seq_len, dtype=np.int64)
    raise TypeError(f"no target counts for {type(windows).__name__}")
