"""Console lines, TensorBoard scalars and device facts (peak FLOPs, memory)."""

from __future__ import annotations

import math
import resource
import sys
from pathlib import Path

import torch

# Dense bf16 peak FLOP/s (no sparsity) by device-name fragment.
_PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; PCIe parts report "H100 PCIe" and are matched below
    "H100 PCIe": 756e12,
    "A100": 312e12,
    "L40S": 362e12,
    "B200": 2250e12,
}


def peak_flops(device: torch.device) -> float | None:
    """Peak dense bf16 FLOP/s of one device, or None when unknown (CPU, unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    best = None
    for key, value in _PEAK_BF16_FLOPS.items():
        if key in name and (best is None or len(key) > len(best[0])):
            best = (key, value)
    return best[1] if best else None


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated device memory (CUDA) or peak resident set size of the process (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kib / 2**20


class MetricsLogger:
    """Writes scalars to TensorBoard (rank 0 only) and prints one line per log step."""

    def __init__(self, folder: Path | None, enabled: bool) -> None:
        self.writer = None
        self.enabled = enabled
        if enabled and folder is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def format_step_line(step: int, total: int, values: dict[str, float]) -> str:
    parts = [f"step {step:>{len(str(total))}}/{total}", f"loss {values['train/loss']:.4f}"]
    parts.append(f"lr {values['train/lr']:.2e}")
    parts.append(f"gnorm {values['train/grad_norm']:.3f}")
    parts.append(f"{values['perf/tokens_per_s'] / 1e3:.1f}k tok/s")
    parts.append(f"{values['perf/step_time_s']:.3f} s/step")
    if values.get("perf/mfu") is not None:
        parts.append(f"mfu {values['perf/mfu']:.1%}")
    parts.append(f"mem {values['mem/peak_gib']:.2f} GiB")
    if "switch/vectors_switched_window" in values:
        parts.append(f"switched {values['switch/vectors_switched_window']:.0f}")
    return " | ".join(parts)
