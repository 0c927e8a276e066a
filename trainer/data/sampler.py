"""Deterministic, resumable, data-parallel sampler over window indices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class DistributedWindowSampler(Sampler[int]):
    """Window indices for one data-parallel rank.

    Each epoch visits a permutation of ``range(n)`` drawn from a ``torch.Generator`` seeded
    with ``seed + epoch`` (the identity order when ``shuffle`` is False). The permutation is cut
    to a multiple of ``dp_world`` and rank ``r`` takes positions ``r, r + dp_world, ...``, so
    ranks are disjoint and all get ``n // dp_world`` indices per epoch.

    With ``infinite=True`` (training) iteration never ends: the epoch counter advances after
    each pass. With ``infinite=False`` (validation) an iterator makes one pass over the current
    epoch and then rewinds, so every new iterator repeats the same pass.

    The position (``epoch``, ``index`` within the epoch) is live state shared by the sampler
    and its iterator: ``state_dict()`` taken after ``k`` indices were drawn restores a sampler
    whose next iterator continues with index ``k + 1``. The state does not depend on the rank,
    since all ranks advance in lockstep.
    """

    def __init__(
        self,
        n: int,
        dp_rank: int = 0,
        dp_world: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        infinite: bool = True,
    ) -> None:
        if dp_world < 1 or not 0 <= dp_rank < dp_world:
            raise ValueError(
                f"need 0 <= dp_rank < dp_world, got dp_rank={dp_rank}, dp_world={dp_world}"
            )
        if n // dp_world < 1:
            raise ValueError(
                f"{n} windows cannot give each of {dp_world} data-parallel ranks at least one"
            )
        self.n = n
        self.dp_rank = dp_rank
        self.dp_world = dp_world
        self.seed = seed
        self.shuffle = shuffle
        self.infinite = infinite
        self.epoch = 0
        self.index = 0

    @property
    def per_rank(self) -> int:
        """Indices this rank draws per epoch."""
        return self.n // self.dp_world

    def __len__(self) -> int:
        return self.per_rank

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """This rank's indices for ``epoch``, in order."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return order[: self.per_rank * self.dp_world][self.dp_rank :: self.dp_world]

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of ``epoch``."""
        self.epoch = epoch
        self.index = 0

    def __iter__(self) -> Iterator[int]:
        # A generator: it reads the position when first advanced, so an iterator created
        # before load_state_dict() still starts from the restored position.
        while True:
            indices = self.epoch_indices(self.epoch).tolist()
            while self.index < len(indices):
                i = indices[self.index]
                self.index += 1
                yield i
            self.index = 0
            if not self.infinite:
                return
            self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "index": self.index,
            "n": self.n,
            "dp_world": self.dp_world,
            "seed": self.seed,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in ("epoch", "index", "n", "dp_world", "seed", "shuffle"):
            if key not in state_dict:
                raise ValueError(f"sampler state_dict is missing key {key!r}")
        for key in ("n", "dp_world", "seed", "shuffle"):
            if state_dict[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state_dict mismatch for {key!r}: saved {state_dict[key]!r}, "
                    f"current {getattr(self, key)!r} (dataset, world size or seed changed)"
                )
        if not 0 <= state_dict["index"] <= self.per_rank:
            raise ValueError(
                f"sampler state_dict index {state_dict['index']} outside [0, {self.per_rank}]"
            )
        self.epoch = int(state_dict["epoch"])
        self.index = int(state_dict["index"])
