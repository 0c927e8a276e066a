"""FSDP2 placement of adapter parameters and helpers to work on local shards.

Shard layout: W [m, n] and B [m, r] are row-sharded (Shard(0)), so both hold
the same rows of m. A [r, n] is column-sharded (Shard(1)) when n divides by the shard count;
otherwise FSDP2 (which forbids uneven sharding on dim > 0) gets Shard(0) and the switch
gathers the full A. On a 2-D (HSDP) mesh the last placement is the sharding one.

Row-sharded dimensions follow torch.chunk (FSDP2 and DTensor): rank i of k holds the rows
[i c, min((i + 1) c, L)) of a length-L dimension, c = ceil(L / k), so later ranks may hold
fewer rows, or none. The row collectives pad every rank's rows to c for the fixed-size
collectives and trim the result again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import ProcessGroup
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from switchlora.layer import ROLE_ATTR, AdapterLinear


def make_placement_fn(shard_size: int) -> Callable[[nn.Parameter], Shard | None]:
    """A `shard_placement_fn` for fully_shard on a mesh whose shard dimension has shard_size ranks."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")

    def placement(param: nn.Parameter) -> Shard | None:
        if getattr(param, ROLE_ATTR, None) == "lora_A" and param.shape[1] % shard_size == 0:
            return Shard(1)
        return Shard(0)

    return placement


def placement_fn(param: nn.Parameter) -> Shard | None:
    """shard_placement_fn for a 1-D mesh over the default process group (plain FSDP).

    Shard(1) for lora_A when n % world_size == 0, else Shard(0); Shard(0) for all else.
    For HSDP use make_placement_fn(size of the shard mesh dimension).
    """
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return make_placement_fn(world)(param)


def is_dtensor(tensor: torch.Tensor) -> bool:
    """True for a DTensor (including nn.Parameter wrapping one)."""
    return isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, or the tensor itself detached (shares storage)."""
    if isinstance(tensor, DTensor):
        return tensor._local_tensor.detach()
    return tensor.detach()


def shard_dim(tensor: torch.Tensor) -> int | None:
    """The tensor dim split by the last mesh dimension, or None (plain or replicated)."""
    if not isinstance(tensor, DTensor):
        return None
    placement = tensor.placements[-1]
    return placement.dim if isinstance(placement, Shard) else None


def local_offsets(tensor: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(local shape, global offset) of this rank's shard; the whole tensor when not a DTensor."""
    if not isinstance(tensor, DTensor):
        return tuple(tensor.shape), (0,) * tensor.dim()
    shape, offset = compute_local_shape_and_global_offset(
        tensor.shape, tensor.device_mesh, tensor.placements
    )
    return tuple(shape), tuple(offset)


def local_range(tensor: torch.Tensor, dim: int) -> tuple[int, int]:
    """(start, length) of this rank's shard along `dim` of the global tensor."""
    shape, offset = local_offsets(tensor)
    return offset[dim], shape[dim]


def local_slice_of(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The part of `full` (global shape of `like`) that this rank holds of `like`."""
    if tuple(full.shape) != tuple(like.shape):
        raise ValueError(f"full tensor {tuple(full.shape)} does not match {tuple(like.shape)}")
    shape, offset = local_offsets(like)
    out = full
    for dim, (start, length) in enumerate(zip(offset, shape)):
        out = out.narrow(dim, start, length)
    return out


@torch.no_grad()
def copy_full_(dst: torch.Tensor, full: torch.Tensor) -> None:
    """Copy this rank's shard of the full tensor into dst (DTensor or plain), in place."""
    target = local(dst)
    target.copy_(local_slice_of(full, dst).to(device=target.device, dtype=target.dtype))


class PendingRows:
    """An all-gather of rows in flight; :meth:`wait` returns the full rows."""

    def __init__(
        self, work: Any, gathered: torch.Tensor, ranks: int, shapes: list[tuple[int, int]]
    ) -> None:
        self._work, self._gathered, self._ranks, self._shapes = work, gathered, ranks, shapes

    def wait(self) -> list[torch.Tensor]:
        """Full rows [k_i, n_i] of every input, in order."""
        self._work.wait()
        ranks = self._ranks
        per_rank = self._gathered.view(ranks, -1)
        out, offset = [], 0
        for rows, cols in self._shapes:
            chunk = per_rank[:, offset : offset + rows * cols].view(ranks, rows, cols)
            out.append(chunk.permute(1, 0, 2).reshape(rows, ranks * cols))
            offset += rows * cols
        return out


def start_gather_rows(local_rows: list[torch.Tensor], like: DTensor) -> PendingRows:
    """Begin gathering full rows [k_i, n_i] from local columns [k_i, n_i / S], for several
    tensors at once (one asynchronous all-gather).

    Each local_rows[i] holds the local columns of rows of a column-sharded [r, n_i] tensor
    on like's mesh (S ranks along its last dimension, even chunks); all share one dtype.
    """
    flat = torch.cat([t.reshape(-1) for t in local_rows])
    mesh = like.device_mesh
    ranks = mesh.size(mesh.ndim - 1)
    gathered = flat.new_empty(ranks * flat.numel())
    all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    work = all_gather(gathered, flat, group=mesh.get_group(mesh.ndim - 1), async_op=True)
    return PendingRows(work, gathered, ranks, [tuple(t.shape) for t in local_rows])


def as_sharded_like(
    local_tensor: torch.Tensor, like: torch.Tensor, dim: int | None, global_shape: tuple[int, ...]
) -> torch.Tensor:
    """Wrap a local tensor as a DTensor on like's mesh, sharded on `dim` (None: replicated).

    The DTensor aliases `local_tensor` and keeps it where it is (a CPU-offloaded pool stays
    in CPU memory even on a CUDA mesh, as FSDP2's CPU offload does; DTensor.from_local would
    copy it to the mesh device). Returns `local_tensor` itself when `like` is not a DTensor.
    """
    if not isinstance(like, DTensor):
        return local_tensor
    last = Shard(dim) if dim is not None else Replicate()
    placements = (*like.placements[:-1], last)
    stride = torch.empty(global_shape, device="meta").stride()
    meta = TensorMeta(torch.Size(global_shape), stride, local_tensor.dtype)
    spec = DTensorSpec(like.device_mesh, placements, tensor_meta=meta)
    return DTensor(local_tensor, spec, requires_grad=False)


def sharded_range(length: int, like: torch.Tensor, dim: int | None) -> tuple[int, int]:
    """(start, length) of this rank's chunk when a dimension of size `length` is sharded
    like `like`'s last mesh dimension (torch.chunk semantics); the whole range for dim None."""
    if dim is None or not isinstance(like, DTensor):
        return 0, length
    placements = (*like.placements[:-1], Shard(0))
    shape, offset = compute_local_shape_and_global_offset((length,), like.device_mesh, placements)
    return offset[0], shape[0]


@dataclass(frozen=True)
class LayerLayout:
    """Global sizes and this rank's local ranges of W [m, n], A [r, n] and B [m, r]."""

    m: int
    """Output width (rows of W and B)."""

    n: int
    """Input width (columns of W and A)."""

    r: int
    """Rank."""

    a_mode: str
    """"plain": A whole on this rank; "cols": A column-sharded; "rows": row-sharded fallback."""

    a_cols: tuple[int, int]
    """(start, length) of the local columns of A (and of the A pool)."""

    a_rows: tuple[int, int]
    """(start, length) of the local rows of A (its gradient and moments)."""

    m_rows: tuple[int, int]
    """(start, length) of the local rows of W and B (and columns of the B pool)."""


def layer_layout(layer: AdapterLinear) -> LayerLayout:
    """Inspect the (possibly FSDP2-sharded) parameters of `layer`; errors on unsupported layouts."""
    w, a, b = layer.base.weight, layer.lora_A, layer.lora_B
    r, n = a.shape
    m = w.shape[0]
    if tuple(w.shape) != (m, n) or tuple(b.shape) != (m, r):
        raise ValueError(f"inconsistent adapter shapes W {w.shape}, A {a.shape}, B {b.shape}")
    kinds = {is_dtensor(t) for t in (w, a, b)}
    if kinds == {False}:
        return LayerLayout(m, n, r, "plain", (0, n), (0, r), (0, m))
    if kinds != {True}:
        raise ValueError("W, A and B must all be DTensors or all plain tensors")
    if not (w.device_mesh == a.device_mesh == b.device_mesh):
        raise ValueError("W, A and B must live on the same device mesh")
    for name, t in (("W", w), ("B", b)):
        if shard_dim(t) not in (0, None):
            raise ValueError(f"{name} must be row-sharded (Shard(0)); use switchlora placement_fn")
    m_rows = local_range(w, 0)
    if local_range(b, 0) != m_rows:
        raise ValueError("W and B must hold the same local rows")
    a_dim = shard_dim(a)
    if a.device_mesh.size(a.device_mesh.ndim - 1) == 1:
        a_dim = None  # a shard dimension of one rank (replicate-only, 1 process): A is whole
    if a_dim == 1:
        return LayerLayout(m, n, r, "cols", local_range(a, 1), (0, r), m_rows)
    if a_dim == 0:
        return LayerLayout(m, n, r, "rows", (0, n), local_range(a, 0), m_rows)
    return LayerLayout(m, n, r, "plain", (0, n), (0, r), m_rows)


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
