"""torch.profiler traces and CUDA memory snapshots on configured steps ([profiling]).

Layout under the dump folder (torchtitan's): ``<save_traces_folder>/iteration_<N>/
rank<R>_trace.json`` (Chrome trace, open in Perfetto or chrome://tracing) and
``<save_memory_snapshot_folder>/iteration_<N>/rank<R>_memory_snapshot.pickle`` (open at
pytorch.org/memory_viz). N is the optimizer step traced: every ``profile_freq``-th step,
each after one warm-up step that is profiled but not saved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from trainer.config import Profiling

MEMORY_HISTORY_ENTRIES = 100_000
"""Allocation events kept for a memory snapshot."""


class StepProfiler:
    """Advance with :meth:`step` after every training step (see module doc)."""

    def __init__(
        self, cfg: Profiling, dump: Path, rank: int, device: torch.device, log: Callable
    ) -> None:
        self.cfg, self.dump, self.rank, self.log = cfg, dump, rank, log
        self.torch_profiler: torch.profiler.profile | None = None
        self.snapshots = cfg.enable_memory_snapshot and device.type == "cuda"
        if cfg.enable_memory_snapshot and not self.snapshots:
            log("profiling.enable_memory_snapshot: needs CUDA; no memory snapshots on this device")

    def start(self, step: int) -> None:
        freq = self.cfg.profile_freq
        if self.cfg.enable_profiling:
            warmup = min(1, freq - 1)
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.torch_profiler = torch.profiler.profile(
                activities=activities,
                schedule=torch.profiler.schedule(wait=freq - 1 - warmup, warmup=warmup, active=1),
                on_trace_ready=self._save_trace,
                record_shapes=True,
            )
            self.torch_profiler.start()
            self.torch_profiler.step_num = step  # resumed runs: iteration numbers stay steps
        if self.snapshots:
            torch.cuda.memory._record_memory_history(max_entries=MEMORY_HISTORY_ENTRIES)

    def _folder(self, name: str, step: int) -> Path:
        folder = self.dump / name / f"iteration_{step}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _save_trace(self, prof: torch.profiler.profile) -> None:
        path = (
            self._folder(self.cfg.save_traces_folder, prof.step_num) / f"rank{self.rank}_trace.json"
        )
        prof.export_chrome_trace(str(path))
        self.log(f"profiling: trace of step {prof.step_num} in {path}")

    def step(self, step: int) -> None:
        """Call after each training step; ``step`` is the optimizer step count now."""
        if self.torch_profiler is not None:
            self.torch_profiler.step()
        if self.snapshots and step % self.cfg.profile_freq == 0:
            folder = self._folder(self.cfg.save_memory_snapshot_folder, step)
            torch.cuda.memory._dump_snapshot(
                str(folder / f"rank{self.rank}_memory_snapshot.pickle")
            )

    def stop(self) -> None:
        if self.torch_profiler is not None:
            self.torch_profiler.stop()
            self.torch_profiler = None
        if self.snapshots:
            torch.cuda.memory._record_memory_history(enabled=None)


@contextmanager
def step_profiler(
    cfg: Profiling, dump: Path, rank: int, device: torch.device, step: int, log: Callable
) -> Iterator[StepProfiler]:
    """A started :class:`StepProfiler` (a no-op when profiling is off), stopped at exit."""
    profiler = StepProfiler(cfg, dump, rank, device, log)
    profiler.start(step)
    try:
        yield profiler
    finally:
        profiler.stop()
