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

Singular vectors come from the eigen-decomposition of a Gram matrix of the smaller side, in
float64 (the Gram squares the condition number, float64 keeps the top-r subspace as
accurate as an fp32 SVD): right singular vectors from G^T G (n x n), left ones from G G^T
(m x m). Each eigenvector is signed so that its largest-magnitude entry is positive: the sign
of an SVD is arbitrary, but here it is not harmless (moments are kept across refreshes), so
it is fixed by this rule rather than left to the solver.

Under FSDP2 the gradient is row-sharded (Shard(0) on m; the last mesh dimension shards,
others replicate). Work per projected weight, with k ranks in the shard group and an owner
rank (weights dealt round-robin over the group, so the eigen-decompositions spread out):

- right: each rank forms G_loc^T G_loc; the sum is reduced to the owner (n^2 numbers <= m n),
  which decomposes it and broadcasts V_r. P is replicated; R and the moments are row-sharded
  like G; projection and back-projection need no communication.
- left: G G^T couples rows held by different ranks, so the owner gathers the rows of G
  (m n numbers, fewer than the n^2 of G^T G) and broadcasts U_r; every rank keeps its own rows
  of P. R^T = sum_ranks G_loc^T P_loc is reduce-scattered over n, so the moments are stored
  transposed, [n, r], sharded on n; N^T is all-gathered (n r numbers) for P_loc N.
  Per step this moves 2 n r numbers per weight, against m n for the gradient itself.

Every rank's projector is therefore the owner's, bit for bit. States are DTensors on the
parameter's mesh (moments Shard(0), right projectors replicated, left projectors Shard(0))
so that torch.distributed.checkpoint saves and reshards them; single-process they are plain.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup
from torch.distributed.tensor import DTensor, Shard
from torch.optim import Optimizer

from switchlora.sharding import as_sharded_like, local, local_range, sharded_range

GRAM_DTYPE = torch.float64
"""Precision of the Gram matrices and their eigen-decomposition."""


def projection_side(m: int, n: int) -> str:
    """ "right" (project the n side away) when m >= n, else "left"."""
    return "right" if m >= n else "left"


def moment_shape(m: int, n: int, rank: int) -> tuple[int, int]:
    """Global shape of the projected gradient and each Adam moment: [m, r] or, left, [n, r]."""
    return (m, rank) if projection_side(m, n) == "right" else (n, rank)


def projector_shape(m: int, n: int, rank: int) -> tuple[int, int]:
    """Global shape of P: [r, n] (right) or [m, r] (left)."""
    return (rank, n) if projection_side(m, n) == "right" else (m, rank)


def state_numel(m: int, n: int, rank: int) -> int:
    """Optimizer-state numbers of one projected weight: two moments plus the projector."""
    rows, cols = moment_shape(m, n, rank)
    p_rows, p_cols = projector_shape(m, n, rank)
    return 2 * rows * cols + p_rows * p_cols


def refresh_count(steps: int, update_interval: int) -> int:
    """Projector computations after `steps` optimizer steps (one at step 0, then every interval)."""
    return 0 if steps <= 0 else (steps - 1) // update_interval + 1


def canonical_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its largest-magnitude entry (first one on ties) is positive."""
    rows = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[rows, torch.arange(vectors.shape[1], device=vectors.device)])
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def top_eigenvectors(gram: torch.Tensor, rank: int) -> torch.Tensor:
    """[d, rank]: eigenvectors of the `rank` largest eigenvalues, descending, canonical signs."""
    _, vectors = torch.linalg.eigh(gram)
    return canonical_signs(vectors[:, -rank:].flip(1))


def shard_group(tensor: torch.Tensor) -> ProcessGroup | None:
    """The process group over which `tensor` is row-sharded, or None (plain or one rank)."""
    if not isinstance(tensor, DTensor):
        return None
    placement = tensor.placements[-1]
    if not (isinstance(placement, Shard) and placement.dim == 0):
        raise ValueError(f"GaLore expects row-sharded (Shard(0)) weights, got {tensor.placements}")
    mesh = tensor.device_mesh
    group = mesh.get_group(mesh.ndim - 1)
    return group if dist.get_world_size(group) > 1 else None


def _chunk(length: int, world: int) -> int:
    """torch.chunk's piece size: every rank's rows fit in it."""
    return -(-length // world)


def _pad_rows(rows: torch.Tensor, size: int) -> torch.Tensor:
    if rows.shape[0] == size:
        return rows.contiguous()
    pad = rows.new_zeros(size - rows.shape[0], *rows.shape[1:])
    return torch.cat([rows, pad])


def _gather_rows_to(
    rows: torch.Tensor, length: int, group: ProcessGroup, owner: int
) -> torch.Tensor | None:
    """The full [length, ...] tensor from every rank's chunk of rows, on the owner only."""
    world = dist.get_world_size(group)
    chunk = _chunk(length, world)
    padded = _pad_rows(rows, chunk)
    is_owner = dist.get_rank(group) == owner
    pieces = [torch.empty_like(padded) for _ in range(world)] if is_owner else None
    dist.gather(padded, pieces, dst=dist.get_global_rank(group, owner), group=group)
    return torch.cat(pieces)[:length] if is_owner else None


def _reduce_scatter_rows(partial: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """This rank's chunk of rows of the sum over ranks of `partial` [length, ...]."""
    world = dist.get_world_size(group)
    length = partial.shape[0]
    chunk = _chunk(length, world)
    padded = _pad_rows(partial, chunk * world)
    out = padded.new_empty(chunk, *partial.shape[1:])
    dist.reduce_scatter_tensor(out, padded, group=group)
    rank = dist.get_rank(group)
    return out[: max(0, min(chunk, length - rank * chunk))]


def _all_gather_rows(rows: torch.Tensor, length: int, group: ProcessGroup) -> torch.Tensor:
    """The full [length, ...] tensor from every rank's chunk of rows, on every rank."""
    world = dist.get_world_size(group)
    chunk = _chunk(length, world)
    padded = _pad_rows(rows, chunk)
    out = padded.new_empty(chunk * world, *rows.shape[1:])
    dist.all_gather_into_tensor(out, padded, group=group)
    return out[:length]


def _basis_on_owner(
    gram: torch.Tensor | None,
    dim: int,
    rank: int,
    group: ProcessGroup | None,
    owner: int,
    device: torch.device,
) -> torch.Tensor:
    """Top-`rank` eigenvectors [dim, rank] of `gram` (given on the owner only), broadcast."""
    if group is None:
        return top_eigenvectors(gram, rank)
    if dist.get_rank(group) == owner:
        basis = top_eigenvectors(gram, rank).contiguous()
    else:
        basis = torch.empty(dim, rank, dtype=GRAM_DTYPE, device=device)
    dist.broadcast(basis, src=dist.get_global_rank(group, owner), group=group)
    return basis


@torch.no_grad()
def compute_projector(grad: torch.Tensor, rank: int, owner: int = 0) -> torch.Tensor:
    """This rank's part of the projector of `grad` (plain or row-sharded DTensor [m, n]).

    Right: P [r, n], the same on every rank. Left: the local rows of P [m, r]. A collective
    on the shard group: every rank calls it for the same weights in the same order.
    """
    m, n = grad.shape
    g = local(grad).to(GRAM_DTYPE)
    group = shard_group(grad)
    is_owner = group is None or dist.get_rank(group) == owner
    if projection_side(m, n) == "right":
        gram = g.T @ g
        if group is not None:
            dist.reduce(gram, dst=dist.get_global_rank(group, owner), group=group)
        basis = _basis_on_owner(gram if is_owner else None, n, rank, group, owner, g.device)
        return basis.T.to(grad.dtype).contiguous()
    full = g if group is None else _gather_rows_to(g, m, group, owner)
    gram = full @ full.T if is_owner else None
    basis = _basis_on_owner(gram, m, rank, group, owner, g.device)
    start, length = local_range(grad, 0)
    return basis[start : start + length].to(grad.dtype).contiguous()


def project(grad: torch.Tensor, projector: torch.Tensor) -> torch.Tensor:
    """Local projected gradient: right G_loc P^T [m_loc, r]; left this rank's rows of G^T P [n, r]."""
    m, n = grad.shape
    g, p = local(grad), local(projector)
    if projection_side(m, n) == "right":
        return g @ p.T
    partial = g.T @ p
    group = shard_group(grad)
    return partial if group is None else _reduce_scatter_rows(partial, group)


def project_back(
    normalized: torch.Tensor, projector: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    """Local full-rank update rows [m_loc, n] from the local normalised moment."""
    m, n = like.shape
    p = local(projector)
    if projection_side(m, n) == "right":
        return normalized @ p
    group = shard_group(like)
    full = normalized if group is None else _all_gather_rows(normalized, n, group)
    return p @ full.T


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
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps, weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
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
