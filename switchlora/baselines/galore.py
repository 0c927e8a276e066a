"""GaLore (Zhao et al., 2024): AdamW whose moments live in a rank-r projection of the gradient.

For a projected weight with gradient G (m x n) the optimizer keeps a projector P, refreshed
from the top-r singular vectors of G when the parameter's step count is a multiple of
`update_interval` (so at its first step too):

- m >= n ("right"): P = V_r^T (r x n), R = G P^T (m x r), update = N P;
- m <  n ("left"):  P = U_r (m x r),   R = P^T G (r x n), update = P N.

Adam runs on R with bias correction (GaLore's formula: denom = sqrt(v) + eps, step size
lr * sqrt(1 - beta2^t) / (1 - beta1^t)) and no moment reset when P changes; N = m / denom is
projected back, scaled by `scale` and applied; decoupled weight decay follows the update.
Parameters of groups without a rank get the same AdamW unprojected.

The projector (its side, its computation from a Gram matrix and how it is distributed under
FSDP2) is in switchlora.baselines.galore_projector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.optim import Optimizer

from switchlora.baselines.galore_projector import (
    compute_projector,
    moment_shape,
    project,
    project_back,
    projection_side,
    projector_shape,
)
from switchlora.optimizer import check_adamw_hyperparameters
from switchlora.sharding import as_sharded_like, local, shard_group, sharded_range


def refresh_count(steps: int, update_interval: int) -> int:
    """Projector computations after `steps` optimizer steps (one at step 0, then every interval)."""
    return 0 if steps <= 0 else (steps - 1) // update_interval + 1


def _zeros_sharded(like: torch.Tensor, shape: tuple[int, int], dim: int | None) -> torch.Tensor:
    """A zero state tensor of global `shape`, sharded like `like` on `dim` (None: replicated)."""
    start, length = sharded_range(shape[0], like, dim if dim == 0 else None)
    rows = length if dim == 0 else shape[0]
    ref = local(like)
    buf = torch.zeros(rows, shape[1], dtype=ref.dtype, device=ref.device)
    return as_sharded_like(buf, like, dim, shape)


class GaLoreAdamW(Optimizer):
    """AdamW with GaLore projection for groups that set `rank` (see the module docstring).

    Group options: lr, betas, eps, weight_decay, and for projected groups rank,
    update_interval (steps between projector refreshes) and scale (alpha).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        rank: int | None = None,
        update_interval: int = 200,
        scale: float = 0.25,
    ) -> None:
        """Groups without `rank` (or with rank None) are plain AdamW."""
        check_adamw_hyperparameters(lr, betas, eps, weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "rank": rank,
            "update_interval": update_interval,
            "scale": scale,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["rank"] is None:
                continue
            if group["update_interval"] < 1:
                raise ValueError(f"update_interval must be >= 1, got {group['update_interval']}")
            for p in group["params"]:
                if p.dim() != 2 or not 1 <= group["rank"] <= min(p.shape):
                    raise ValueError(
                        f"rank {group['rank']} does not fit a weight of shape {tuple(p.shape)}"
                    )
        self._owners = self._deal_owners()

    def _deal_owners(self) -> dict[int, int]:
        """Projected weight -> owner rank within its shard group, dealt round-robin."""
        owners: dict[int, int] = {}
        index = 0
        for group in self.param_groups:
            if group["rank"] is None:
                continue
            for p in group["params"]:
                shards = shard_group(p)
                world = 1 if shards is None else dist.get_world_size(shards)
                owners[id(p)] = index % world
                index += 1
        return owners

    def _init_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        if group["rank"] is None:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            return state
        m, n = p.shape
        rank = group["rank"]
        shape = moment_shape(m, n, rank)
        state["exp_avg"] = _zeros_sharded(p, shape, 0)
        state["exp_avg_sq"] = _zeros_sharded(p, shape, 0)
        right = projection_side(m, n) == "right"
        state["projector"] = _zeros_sharded(p, projector_shape(m, n, rank), None if right else 0)
        return state

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step over every parameter that has a gradient (collective for sharded weights)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p] if self.state.get(p) else self._init_state(p, group)
                self._update(p, state, group)
        return loss

    def _update(self, p: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        projected = group["rank"] is not None
        if projected:
            if int(state["step"].item()) % group["update_interval"] == 0:
                fresh = compute_projector(p.grad, group["rank"], self._owners[id(p)])
                local(state["projector"]).copy_(fresh)
            grad = project(p.grad, state["projector"])
        else:
            grad = local(p.grad)
        exp_avg, exp_avg_sq = local(state["exp_avg"]), local(state["exp_avg_sq"])
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = float(state["step"].item())
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        normalized = exp_avg / denom
        if projected:
            normalized = project_back(normalized, state["projector"], p) * group["scale"]
        param = local(p)
        param.add_(normalized, alpha=-step_size)
        if group["weight_decay"] > 0:
            param.add_(param, alpha=-group["lr"] * group["weight_decay"])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Standard loading; the owners are dealt again (they depend only on the group order)."""
        super().load_state_dict(state_dict)
        self._owners = self._deal_owners()
