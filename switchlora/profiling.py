"""Named parts of a switch step: torch.profiler ranges, or wall-clock timings for benchmarks.

Outside both (training) :func:`switch_range` costs one check.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

RANGES = ("decide", "read", "gather", "write", "w_update", "reset")
"""Parts of a switch step: host decisions and the index transfer; old vectors, pool write-back
and candidates; the wait for the all-gather of full A rows; the writes (W corrections and new vectors);
the W corrections alone (inside "write": one pass over every local W, the memory-bound
floor of any switch); the optimizer state resets of the counterparts."""

_timings: dict[str, float] | None = None
_device: torch.device | None = None


@contextlib.contextmanager
def switch_timings(device: torch.device) -> Iterator[dict[str, float]]:
    """Accumulate the wall seconds of every range entered inside the block (name -> seconds).

    On CUDA each range synchronises the device at its start and end, so the figures are device
    time too (and the switch loses its overlap with other work): for benchmarks only.
    """
    global _timings, _device
    _timings, _device = dict.fromkeys(RANGES, 0.0), device
    try:
        yield _timings
    finally:
        _timings, _device = None, None


def _sync() -> None:
    if _device is not None and _device.type == "cuda":
        torch.cuda.synchronize(_device)


@contextlib.contextmanager
def switch_range(name: str) -> Iterator[None]:
    """Time the block (inside :func:`switch_timings`), or ``record_function("switchlora.<name>")``
    while a profiler runs, or nothing."""
    if _timings is not None:
        _sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            _timings[name] = _timings.get(name, 0.0) + time.perf_counter() - start
        return
    if not torch.autograd._profiler_enabled():
        yield
        return
    with torch.profiler.record_function(f"switchlora.{name}"):
        yield
