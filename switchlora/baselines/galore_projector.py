"""GaLore projectors: the top-r singular basis of a (row-sharded) gradient, and its use.

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

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup

from switchlora.sharding import (
    all_gather_rows,
    gather_rows_to,
    local,
    local_range,
    reduce_scatter_rows,
    shard_group,
)

GRAM_DTYPE = torch.float64
"""Precision of the Gram matrices and their eigen-decomposition."""


def projection_side(m: int, n: int) -> str:
    """The side GaLore projects: "right" (P is r x n) when m >= n, else "left" (P is m x r)."""
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


def canonical_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its largest-magnitude entry (first one on ties) is positive."""
    rows = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[rows, torch.arange(vectors.shape[1], device=vectors.device)])
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def top_eigenvectors(gram: torch.Tensor, rank: int) -> torch.Tensor:
    """[d, rank]: eigenvectors of the `rank` largest eigenvalues, descending, canonical signs."""
    _, vectors = torch.linalg.eigh(gram)
    return canonical_signs(vectors[:, -rank:].flip(1))


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
    full = g if group is None else gather_rows_to(g, m, group, owner)
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
    return partial if group is None else reduce_scatter_rows(partial, group)


def project_back(
    normalized: torch.Tensor, projector: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    """Local full-rank update rows [m_loc, n] from the local normalised moment."""
    m, n = like.shape
    p = local(projector)
    if projection_side(m, n) == "right":
        return normalized @ p
    group = shard_group(like)
    full = normalized if group is None else all_gather_rows(normalized, n, group)
    return p @ full.T
