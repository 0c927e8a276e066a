"""Learning-rate schedules as plain functions of the step (multipliers of the peak lr)."""

from __future__ import annotations

import math

import torch


def warmup_decay_factor(
    step: int, warmup_steps: int, total_steps: int, decay: str, min_lr_ratio: float
) -> float:
    """Linear warm-up to 1, then cosine/linear/constant decay to ``min_lr_ratio`` at the end.

    ``step`` is the 0-based index of the optimizer step about to be taken.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif decay == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"lr_schedule.decay: unknown decay {decay!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    decay: str,
    min_lr_ratio: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over :func:`warmup_decay_factor`; its state_dict is checkpointable."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_decay_factor(step, warmup_steps, total_steps, decay, min_lr_ratio),
    )


def restart_warmup_factor(
    step: int,
    warmup_steps: int,
    total_steps: int,
    decay: str,
    min_lr_ratio: float,
    restart_every: int,
    restart_warmup_steps: int,
) -> float:
    """ReLoRA's jagged schedule: :func:`warmup_decay_factor` with a re-warm-up after each restart.

    Restarts begin at steps ``restart_every``, ``2 * restart_every``, ... (0-based index of
    the step about to be taken). For ``restart_warmup_steps`` steps after each one the factor
    climbs linearly, (i + 1) / restart_warmup_steps, to the envelope's value at the end of the
    re-warm-up, which it then follows again.
    """
    envelope = warmup_decay_factor(step, warmup_steps, total_steps, decay, min_lr_ratio)
    if restart_every <= 0 or restart_warmup_steps <= 0 or step < restart_every:
        return envelope
    since = step % restart_every
    if since >= restart_warmup_steps:
        return envelope
    end = step - since + restart_warmup_steps - 1
    target = warmup_decay_factor(end, warmup_steps, total_steps, decay, min_lr_ratio)
    return (since + 1) / restart_warmup_steps * target
