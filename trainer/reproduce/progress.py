"""Progress of a suite: one line when a run starts or ends, and throttled lines with ETAs."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

STEP_LINE = re.compile(r"^step\s+(\d+)/(\d+)\s*\|.*?\|\s*([\d.]+)\s*s/step")
"""The trainer's console line: ``step N/T | ... | X s/step | ...``."""

DEFAULT_OVERHEAD_S = 30.0
"""Per-run start-up and evaluation time assumed before any run has been measured."""


def duration(seconds: float | None) -> str:
    """``1h02m``, ``12m05s`` or ``45s`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass
class Progress:
    """ETA bookkeeping for the runs this invocation trains, in order.

    ``pending`` lists (run name, method, steps) still to train, the current one first. The
    rate (seconds per step) is the trainer's own, from its latest log line; other methods'
    rates are scaled by the suite's measured ``hints`` when it has them.
    """

    pending: list[tuple[str, str, int]]
    hints: Mapping[str, float] = field(default_factory=dict)
    overhead_s: float = DEFAULT_OVERHEAD_S
    every_s: float = 30.0
    emit: Callable[[str], None] = print
    step: int = 0
    rate: float | None = None
    _last_emit: float = 0.0

    def estimate(self) -> float | None:
        """Seconds left for the whole invocation (None before any rate is known)."""
        if not self.pending:
            return 0.0
        name, method, steps = self.pending[0]
        if self.rate is None and not self.hints:
            return None
        total = 0.0
        for i, (_, m, n) in enumerate(self.pending):
            rate = self._rate_for(m, method)
            if rate is None:
                return None
            done = self.step if i == 0 else 0
            total += (n - done) * rate + (0.0 if i == 0 and self.step else self.overhead_s)
        return total

    def _rate_for(self, method: str, current: str) -> float | None:
        if self.rate is None:
            return self.hints.get(method)
        if method in self.hints and current in self.hints:
            return self.rate * self.hints[method] / self.hints[current]
        return self.rate

    def run_eta(self) -> float | None:
        if not self.pending or self.rate is None:
            return None
        return (self.pending[0][2] - self.step) * self.rate

    def start_run(self) -> None:
        self.step = 0
        self._last_emit = time.monotonic()

    def finish_run(self) -> None:
        if self.pending:
            self.pending.pop(0)
        self.step = 0

    def on_line(self, line: str) -> None:
        """Parse a trainer line; every ``every_s`` seconds, emit a progress line."""
        match = STEP_LINE.match(line.strip())
        if not match or not self.pending:
            return
        self.step, total, self.rate = int(match[1]), int(match[2]), float(match[3])
        now = time.monotonic()
        if now - self._last_emit < self.every_s and self.step < total:
            return
        self._last_emit = now
        name = self.pending[0][0]
        self.emit(
            f"    {name}: step {self.step}/{total} ({self.step / total:.0%}) | "
            f"{self.rate:.3f} s/step | run ETA {duration(self.run_eta())} | "
            f"suite ETA {duration(self.estimate())}"
        )
