"""Console lines, TensorBoard (and optionally Weights & Biases) scalars, device facts."""

from __future__ import annotations

import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

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


def start_wandb(folder: Path, project: str, name: str, config: dict[str, Any]) -> Any:
    """A Weights & Biases run under ``folder``/wandb, offline unless WANDB_MODE says otherwise
    (offline needs no network and no account; ``wandb sync`` uploads the folder later)."""
    import wandb

    folder.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=project,
        name=name,
        dir=str(folder),
        config=config,
        mode=os.environ.get("WANDB_MODE", "offline"),
    )


class MetricsLogger:
    """Writes scalars to TensorBoard and Weights & Biases (rank 0 only) and prints one line
    per log step. ``wandb_run`` is a run from :func:`start_wandb` (None: no W&B logging)."""

    def __init__(self, folder: Path | None, enabled: bool, wandb_run: Any = None) -> None:
        self.writer = None
        self.enabled = enabled
        self.wandb_run = wandb_run if enabled else None
        if enabled and folder is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        finite = {t: v for t, v in values.items() if v is not None and math.isfinite(v)}
        if self.wandb_run is not None and finite:
            self.wandb_run.log(finite, step=step)
        if self.writer is None:
            return
        for tag, value in finite.items():
            self.writer.add_scalar(tag, value, step)

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def format_step_line(step: int, total: int, values: dict[str, float]) -> str:
    parts = [f"step {step:>{len(str(total))}}/{total}", f"loss {values['train/loss']:.4f}"]
    parts.append(f"lr {values['train/lr']:.2e}")
    parts.append(f"gnorm {values['train/grad_norm']:.3f}")
    parts.append(f"{values['perf/tokens_per_s'] / 1e3:.1f}k tok/s")
    if "perf/tokens_per_s_per_device" in values:
        parts.append(f"{values['perf/tokens_per_s_per_device'] / 1e3:.1f}k tok/s/dev")
    if "perf/tflops_per_device" in values:
        parts.append(f"{values['perf/tflops_per_device']:.2f} TFLOP/s/dev")
    parts.append(f"{values['perf/step_time_s']:.3f} s/step")
    if values.get("perf/mfu") is not None:
        parts.append(f"mfu {values['perf/mfu']:.1%}")
    parts.append(f"mem {values['mem/peak_gib']:.2f} GiB")
    if "switch/vectors_switched_window" in values:
        parts.append(f"switched {values['switch/vectors_switched_window']:.0f}")
    return " | ".join(parts)
