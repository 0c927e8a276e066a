"""Count the collectives a process issues and the bytes they move, by wrapping the APIs.

FSDP2 calls the ``torch.distributed`` functions (``all_gather_into_tensor`` /
``all_gather_single``, ``reduce_scatter_tensor`` / ``reduce_scatter_single``, ``all_reduce``)
through the module at call time, and DTensor (gradient-norm reduction, the switch's row
gathers) calls ``torch.distributed._functional_collectives``; :class:`CommCounter` replaces
those module attributes while it is active and records every call. Nested calls (one API
implemented by another) count once. Calls on a group of one rank move nothing and are
skipped. Collectives inside compiled graphs are not seen (none of the trainer's are there:
FSDP2 hooks and the switch's gathers run outside compiled regions).

Bytes are counted as the payload of the full buffer: all-gather output, reduce-scatter
input, all-reduce tensor. ``wire`` is what one rank sends with ring algorithms:
(n-1)/n of the payload for all-gather and reduce-scatter, 2(n-1)/n for all-reduce.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

KINDS = ("all_gather", "reduce_scatter", "all_reduce", "broadcast", "all_to_all")
"""Collective kinds reported."""

_C10D_APIS: dict[str, str] = {
    "all_gather_into_tensor": "all_gather",
    "all_gather_single": "all_gather",
    "_all_gather_base": "all_gather",
    "all_gather": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter_single": "reduce_scatter",
    "_reduce_scatter_base": "reduce_scatter",
    "reduce_scatter": "reduce_scatter",
    "all_reduce": "all_reduce",
    "broadcast": "broadcast",
    "all_to_all_single": "all_to_all",
}
"""torch.distributed functions wrapped (those present in the installed version)."""

_FUNCOL_APIS: dict[str, str] = {
    "all_gather_tensor": "all_gather",
    "all_gather_single": "all_gather",
    "all_gather_tensor_autograd": "all_gather",
    "all_gather_single_autograd": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter_single": "reduce_scatter",
    "reduce_scatter_tensor_autograd": "reduce_scatter",
    "all_reduce": "all_reduce",
    "broadcast": "broadcast",
    "all_to_all_single": "all_to_all",
}
"""torch.distributed._functional_collectives functions wrapped (those present)."""


@dataclass
class Totals:
    """Calls and bytes of one collective kind."""

    calls: int = 0
    bytes: int = 0
    """Payload bytes (the full buffer of each call)."""
    wire_bytes: float = 0.0
    """Bytes one rank sends with a ring algorithm."""


@dataclass
class CommCounter:
    """Context manager that counts collectives by kind while active (see module doc)."""

    totals: dict[str, Totals] = field(default_factory=lambda: {k: Totals() for k in KINDS})
    _saved: list[tuple[Any, str, Callable]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def reset(self) -> None:
        """Zero every total (the wrappers stay installed)."""
        with self._lock:
            self.totals = {k: Totals() for k in KINDS}

    def snapshot(self) -> dict[str, Totals]:
        """A copy of the totals so far."""
        with self._lock:
            return {k: Totals(t.calls, t.bytes, t.wire_bytes) for k, t in self.totals.items()}

    def __enter__(self) -> CommCounter:
        if self._saved:
            raise RuntimeError("CommCounter is already active")
        for module, apis, measure in (
            (dist, _C10D_APIS, _c10d_payload),
            (funcol, _FUNCOL_APIS, _funcol_payload),
        ):
            for name, kind in apis.items():
                fn = getattr(module, name, None)
                if fn is None:
                    continue
                self._saved.append((module, name, fn))
                setattr(module, name, self._wrap(fn, name, kind, measure))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, fn in reversed(self._saved):
            setattr(module, name, fn)
        self._saved.clear()

    def _wrap(self, fn: Callable, name: str, kind: str, measure: Callable) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._local, "depth", 0)
            if depth == 0 and not torch.compiler.is_compiling():
                payload, ranks = measure(name, args, kwargs)
                if ranks > 1:
                    self._record(kind, payload, ranks)
            self._local.depth = depth + 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.depth = depth

        counted.__wrapped__ = fn  # type: ignore[attr-defined]
        return counted

    def _record(self, kind: str, payload: int, ranks: int) -> None:
        factor = (ranks - 1) / ranks * (2 if kind == "all_reduce" else 1)
        with self._lock:
            t = self.totals[kind]
            t.calls += 1
            t.bytes += payload
            t.wire_bytes += payload * factor


def _nbytes(t: Any) -> int:
    if isinstance(t, (list, tuple)):
        return sum(_nbytes(x) for x in t)
    if isinstance(t, torch.Tensor):
        return t.numel() * t.element_size()
    return 0


def group_size(group: Any) -> int:
    """Ranks in a process group, (mesh, dim) pair, mesh, rank list, or None (world)."""
    if group is None:
        return dist.get_world_size()
    if isinstance(group, dist.ProcessGroup):
        return group.size()
    if isinstance(group, tuple) and len(group) == 2 and hasattr(group[0], "size"):
        return group[0].size(group[1])
    if hasattr(group, "size") and hasattr(group, "mesh"):  # DeviceMesh
        return group.size()
    if isinstance(group, (list, tuple)):
        return len(group)
    if isinstance(group, str):  # a group name
        return dist.distributed_c10d._resolve_process_group(group).size()
    return dist.get_world_size()


def _arg(args: tuple, kwargs: dict, index: int, *names: str) -> Any:
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return args[index] if len(args) > index else None


def _c10d_payload(name: str, args: tuple, kwargs: dict) -> tuple[int, int]:
    """(payload bytes, group size) of a torch.distributed call."""
    if name in ("reduce_scatter_tensor", "reduce_scatter_single", "_reduce_scatter_base"):
        tensor, group = _arg(args, kwargs, 1, "input"), _arg(args, kwargs, 3, "group")
    elif name == "reduce_scatter":
        tensor, group = _arg(args, kwargs, 1, "input_list"), _arg(args, kwargs, 3, "group")
    elif name in ("all_reduce", "broadcast"):
        tensor, group = _arg(args, kwargs, 0, "tensor"), _arg(args, kwargs, 2, "group")
    elif name == "all_to_all_single":
        tensor, group = _arg(args, kwargs, 1, "input"), _arg(args, kwargs, 4, "group")
    else:  # all-gathers: the output holds the full payload
        tensor = _arg(args, kwargs, 0, "output_tensor", "tensor_list")
        group = _arg(args, kwargs, 2, "group")
    return _nbytes(tensor), group_size(group)


def _funcol_payload(name: str, args: tuple, kwargs: dict) -> tuple[int, int]:
    """(payload bytes, group size) of a functional collective call."""
    tensor = _arg(args, kwargs, 0, "self", "input")
    if name.startswith("all_gather"):
        ranks = group_size(_arg(args, kwargs, 2, "group"))
        return _nbytes(tensor) * ranks, ranks
    if name.startswith("reduce_scatter"):
        return _nbytes(tensor), group_size(_arg(args, kwargs, 3, "group"))
    if name == "all_to_all_single":
        return _nbytes(tensor), group_size(_arg(args, kwargs, 3, "group"))
    return _nbytes(tensor), group_size(_arg(args, kwargs, 2, "group"))
