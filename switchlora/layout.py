"""Where this rank's shards of one adapter layer sit in the full tensors."""

from __future__ import annotations

from dataclasses import dataclass

from switchlora.layer import AdapterLinear
from switchlora.sharding import is_dtensor, local_range, shard_dim

A_MODES = ("plain", "cols", "rows")


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
