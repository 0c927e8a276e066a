"""Which vectors of an optimizer bank to reset or freeze in a step, collected on the host."""

from __future__ import annotations

import numpy as np

from switchlora.index_pack import IndexPack
from switchlora.vector_bank import BankIndex, VectorBank


class BankIndexBuilder:
    """Host side of a BankIndex: flat indices collected from several groups, sent in an IndexPack."""

    def __init__(self) -> None:
        self.moment: list[np.ndarray] = []
        self.step: list[np.ndarray] = []
        self.with_steps = False
        self.handles: tuple[int, int | None] | None = None

    @property
    def size(self) -> int:
        """Number of vectors (moment indices)."""
        return sum(len(x) for x in self.moment)

    def add(
        self,
        bank: VectorBank,
        bank_rows: np.ndarray,
        positions: np.ndarray,
        rank: int,
        with_steps: bool,
    ) -> None:
        """Vectors `positions` of bank layers `bank_rows` (moments: local rows of A only)."""
        start, length = bank.rows
        if length == rank:  # every vector held here (B, and A unless row-sharded)
            self.moment.append(bank_rows * rank + positions)
        else:
            held = (positions >= start) & (positions < start + length)
            self.moment.append(bank_rows[held] * length + positions[held] - start)
        if with_steps:
            self.with_steps = True
            self.step.append(bank_rows * rank + positions)

    def queue(self, pack: IndexPack) -> None:
        """Queue the concatenated indices."""
        moment = pack.add(np.concatenate(self.moment) if self.moment else np.zeros(0))
        step = pack.add(np.concatenate(self.step)) if self.with_steps else None
        self.handles = (moment, step)

    def resolve(self, pack: IndexPack) -> BankIndex:
        """The device BankIndex after pack.send()."""
        assert self.handles is not None
        moment, step = self.handles
        return BankIndex(pack.get(moment), None if step is None else pack.get(step))
