"""Collectives over the rows of a row-sharded tensor (torch.chunk layout, uneven allowed).

FSDP2 and DTensor give rank i of k the rows [i c, min((i + 1) c, L)) of a length-L dimension,
c = ceil(L / k) (later ranks may hold fewer rows, or none). Each helper pads every rank's
rows to c so that the fixed-size collectives apply, and trims the result again.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup
from torch.distributed.tensor import DTensor, Shard


def shard_group(tensor: torch.Tensor) -> ProcessGroup | None:
    """The process group over which `tensor` is row-sharded, or None (plain or one rank)."""
    if not isinstance(tensor, DTensor):
        return None
    placement = tensor.placements[-1]
    if not (isinstance(placement, Shard) and placement.dim == 0):
        raise ValueError(f"expected a row-sharded (Shard(0)) weights, got {tensor.placements}")
    mesh = tensor.device_mesh
    group = mesh.get_group(mesh.ndim - 1)
    return group if dist.get_world_size(group) > 1 else None


def chunk_size(length: int, world: int) -> int:
    """torch.chunk's piece size: every rank's rows fit in it."""
    return -(-length // world)


def pad_rows(rows: torch.Tensor, size: int) -> torch.Tensor:
    """`rows` with zero rows appended up to `size` rows."""
    if rows.shape[0] == size:
        return rows.contiguous()
    pad = rows.new_zeros(size - rows.shape[0], *rows.shape[1:])
    return torch.cat([rows, pad])


def gather_rows_to(
    rows: torch.Tensor, length: int, group: ProcessGroup, owner: int
) -> torch.Tensor | None:
    """The full [length, ...] tensor from every rank's chunk of rows, on the owner only."""
    world = dist.get_world_size(group)
    chunk = chunk_size(length, world)
    padded = pad_rows(rows, chunk)
    is_owner = dist.get_rank(group) == owner
    pieces = [torch.empty_like(padded) for _ in range(world)] if is_owner else None
    dist.gather(padded, pieces, dst=dist.get_global_rank(group, owner), group=group)
    return torch.cat(pieces)[:length] if is_owner else None


def reduce_scatter_rows(partial: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """This rank's chunk of rows of the sum over ranks of `partial` [length, ...]."""
    world = dist.get_world_size(group)
    length = partial.shape[0]
    chunk = chunk_size(length, world)
    padded = pad_rows(partial, chunk * world)
    out = padded.new_empty(chunk, *partial.shape[1:])
    dist.reduce_scatter_tensor(out, padded, group=group)
    rank = dist.get_rank(group)
    return out[: max(0, min(chunk, length - rank * chunk))]


def all_gather_rows(rows: torch.Tensor, length: int, group: ProcessGroup) -> torch.Tensor:
    """The full [length, ...] tensor from every rank's chunk of rows, on every rank."""
    world = dist.get_world_size(group)
    chunk = chunk_size(length, world)
    padded = pad_rows(rows, chunk)
    out = padded.new_empty(chunk * world, *rows.shape[1:])
    dist.all_gather_into_tensor(out, padded, group=group)
    return out[:length]
