"""Per-layer switch state kept by the controller (host decisions + device freeze counters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from switchlora.candidates import PoolFactor, place_pool
from switchlora.init import initial_pool_indices
from switchlora.layer import AdapterLinear
from switchlora.layout import LayerLayout
from switchlora.sharding import as_sharded_like, local


@dataclass
class LayerSwitchState:
    """Pointers, freeze counters and candidate pools of one adapter layer."""

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

    frz_a: torch.Tensor
    """[r] int32 on the compute device: remaining frozen steps of each A row."""

    frz_b: torch.Tensor
    """[r] int32 on the compute device: remaining frozen steps of each B column."""

    p_a: int = 0
    """Round-robin pointer of A rows (next position to switch)."""

    p_b: int = 0
    """Round-robin pointer of B columns; stays r // 2 ahead of p_a."""

    frz_host_a: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    """Host mirror of frz_a (no device sync needed for the cap)."""

    frz_host_b: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    """Host mirror of frz_b."""

    pool_a: PoolFactor | None = None
    """A candidate pool (pool source only)."""

    pool_b: PoolFactor | None = None
    """B candidate pool (pool source only)."""

    @property
    def device(self) -> torch.device:
        """Device of the local parameter shards."""
        return local(self.layer.lora_A).device

    def frozen_counts(self) -> tuple[int, int]:
        """(f_A, f_B): A rows and B columns frozen right now (host mirror)."""
        return int((self.frz_host_a > 0).sum()), int((self.frz_host_b > 0).sum())

    def attach_pools(self, pool_a: torch.Tensor, pool_b: torch.Tensor, offload_cpu: bool) -> None:
        """Keep this rank's part of the full pools (pool_A [C, n], pool_B [C, m])."""
        lay = self.layout
        c = pool_a.shape[0]
        if tuple(pool_a.shape) != (c, lay.n) or tuple(pool_b.shape) != (c, lay.m):
            raise ValueError(
                f"{self.name}: pools {tuple(pool_a.shape)}, {tuple(pool_b.shape)} do not fit "
                f"m={lay.m}, n={lay.n}"
            )
        a_rows = pool_a.narrow(1, *lay.a_cols)
        b_rows = pool_b.narrow(1, *lay.m_rows)
        dtype = self.layer.lora_A.dtype
        use_a, use_b = initial_pool_indices(c, lay.r)
        self.pool_a = PoolFactor(place_pool(a_rows.to(dtype), self.device, offload_cpu), use_a, 0)
        self.pool_b = PoolFactor(place_pool(b_rows.to(dtype), self.device, offload_cpu), use_b, 0)

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
        self.frz_host_a = _host_int32(sd["frz_a"])
        self.frz_host_b = _host_int32(sd["frz_b"])
        self.frz_a.copy_(torch.from_numpy(self.frz_host_a))
        self.frz_b.copy_(torch.from_numpy(self.frz_host_b))
        if self.pool_a is None or self.pool_b is None:
            if "pool_A" in sd:
                raise ValueError(f"{self.name}: checkpoint has pools but this controller has none")
            return
        if "pool_A" not in sd:
            raise ValueError(f"{self.name}: checkpoint has no pools but the pool source is used")
        self.pool_a.use = np.asarray(sd["use_a"], dtype=np.int64).copy()
        self.pool_b.use = np.asarray(sd["use_b"], dtype=np.int64).copy()
        self.pool_a.next, self.pool_b.next = int(sd["next_a"]), int(sd["next_b"])
        for factor, value in ((self.pool_a, sd["pool_A"]), (self.pool_b, sd["pool_B"])):
            source = local(value)
            if source.data_ptr() != factor.rows.data_ptr():
                factor.rows.copy_(source.to(factor.rows.device))


def _host_int32(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.int32).copy()
