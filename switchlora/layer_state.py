"""Per-layer switch state: a view of its group's stacked host arrays and pools.

The controller keeps the pointers and freeze counters of all layers of one shape in numpy
arrays (decisions for many layers at once) and their pools in one stacked tensor; this
class exposes one layer's slice of them by name, and its part of the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from switchlora.candidates import PoolFactor
from switchlora.layer import AdapterLinear
from switchlora.layout import LayerLayout
from switchlora.sharding import as_sharded_like, local


@dataclass
class HostCounters:
    """Pointers and freeze counters of G layers (host side: decisions never sync a device)."""

    p_a: np.ndarray
    """[G] int64 round-robin pointers of A rows (next position to switch)."""

    p_b: np.ndarray
    """[G] int64 pointers of B columns; each stays r // 2 ahead of p_a."""

    frz_a: np.ndarray
    """[G, r] int32 remaining frozen steps of each A row."""

    frz_b: np.ndarray
    """[G, r] int32 remaining frozen steps of each B column."""

    @classmethod
    def zeros(cls, layers: int, rank: int) -> HostCounters:
        """Counters at step 0: p_a = 0, p_b = r // 2, nothing frozen."""
        return cls(
            p_a=np.zeros(layers, np.int64),
            p_b=np.full(layers, rank // 2, np.int64),
            frz_a=np.zeros((layers, rank), np.int32),
            frz_b=np.zeros((layers, rank), np.int32),
        )


@dataclass(eq=False)
class LayerSwitchState:
    """Pointers, freeze counters and candidate pools of one adapter layer (views)."""

    name: str
    """Module path of the layer."""

    index: int
    """Layer index (position in the controller's layer dict): keys every seeded draw."""

    layer: AdapterLinear
    """The adapter layer itself (parameters are read from it at every step)."""

    layout: LayerLayout
    """This rank's local ranges of W, A and B."""

    switchable: bool
    """False when C = min(m, n) <= r: the layer never switches."""

    counters: HostCounters
    """The stacked counters of this layer's group."""

    row: int
    """This layer's row in `counters` (and in its group's stacked pools)."""

    pool_a: PoolFactor | None = field(default=None)
    """A candidate pool (pool source only): a view of the group's stacked pool."""

    pool_b: PoolFactor | None = field(default=None)
    """B candidate pool (pool source only)."""

    @property
    def p_a(self) -> int:
        """Round-robin pointer of A rows."""
        return int(self.counters.p_a[self.row])

    @p_a.setter
    def p_a(self, value: int) -> None:
        self.counters.p_a[self.row] = value

    @property
    def p_b(self) -> int:
        """Round-robin pointer of B columns."""
        return int(self.counters.p_b[self.row])

    @p_b.setter
    def p_b(self, value: int) -> None:
        self.counters.p_b[self.row] = value

    @property
    def frz_host_a(self) -> np.ndarray:
        """[r] int32 remaining frozen steps of each A row (a view)."""
        return self.counters.frz_a[self.row]

    @property
    def frz_host_b(self) -> np.ndarray:
        """[r] int32 remaining frozen steps of each B column (a view)."""
        return self.counters.frz_b[self.row]

    @property
    def frz_a(self) -> torch.Tensor:
        """frz_host_a as a CPU tensor (shares memory)."""
        return torch.from_numpy(self.frz_host_a)

    @property
    def frz_b(self) -> torch.Tensor:
        """frz_host_b as a CPU tensor (shares memory)."""
        return torch.from_numpy(self.frz_host_b)

    def pool_dtensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The pools as DTensors on the layer's mesh (plain tensors single-process)."""
        assert self.pool_a is not None and self.pool_b is not None
        lay = self.layout
        c = self.pool_a.size
        a_dim = 1 if lay.a_mode == "cols" else None
        pool_a = as_sharded_like(self.pool_a.rows, self.layer.lora_A, a_dim, (c, lay.n))
        pool_b = as_sharded_like(self.pool_b.rows, self.layer.base.weight, 1, (c, lay.m))
        return pool_a, pool_b

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue with identical decisions."""
        out: dict[str, Any] = {
            "p_a": self.p_a,
            "p_b": self.p_b,
            "frz_a": torch.from_numpy(self.frz_host_a.copy()),
            "frz_b": torch.from_numpy(self.frz_host_b.copy()),
        }
        if self.pool_a is not None and self.pool_b is not None:
            pool_a, pool_b = self.pool_dtensors()
            out.update(
                {
                    "use_a": torch.from_numpy(self.pool_a.use.copy()),
                    "use_b": torch.from_numpy(self.pool_b.use.copy()),
                    "next_a": self.pool_a.next,
                    "next_b": self.pool_b.next,
                    "pool_A": pool_a,
                    "pool_B": pool_b,
                }
            )
        return out

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from state_dict(); pools are copied into the existing local shards."""
        self.p_a, self.p_b = int(sd["p_a"]), int(sd["p_b"])
        self.frz_host_a[:] = _host_int32(sd["frz_a"])
        self.frz_host_b[:] = _host_int32(sd["frz_b"])
        if self.pool_a is None or self.pool_b is None:
            if "pool_A" in sd:
                raise ValueError(f"{self.name}: checkpoint has pools but this controller has none")
            return
        if "pool_A" not in sd:
            raise ValueError(f"{self.name}: checkpoint has no pools but the pool source is used")
        self.pool_a.use[:] = np.asarray(sd["use_a"], dtype=np.int64)
        self.pool_b.use[:] = np.asarray(sd["use_b"], dtype=np.int64)
        self.pool_a.next, self.pool_b.next = int(sd["next_a"]), int(sd["next_b"])
        for factor, value in ((self.pool_a, sd["pool_A"]), (self.pool_b, sd["pool_B"])):
            source = local(value)
            if source.data_ptr() != factor.rows.data_ptr():
                factor.rows.copy_(source.to(factor.rows.device))


def _host_int32(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.int32).copy()
