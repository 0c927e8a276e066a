"""ReLoRA's jagged LR schedule: the cosine envelope with a linear re-warm-up after each reset."""

from __future__ import annotations

import math

import pytest

from trainer.lr_schedule import restart_warmup_factor, warmup_decay_factor

ARGS = {"warmup_steps": 10, "total_steps": 100, "decay": "cosine", "min_lr_ratio": 0.1}


def envelope(step: int) -> float:
    progress = min(1.0, (step - 10) / 90)
    if step < 10:
        return (step + 1) / 10
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def test_envelope_outside_the_rewarmups():
    for step in [*range(0, 30), *range(35, 60), *range(65, 90), *range(95, 100)]:
        got = restart_warmup_factor(step, **ARGS, restart_every=30, restart_warmup_steps=5)
        assert got == pytest.approx(envelope(step)), step
        assert got == warmup_decay_factor(step, **ARGS)


def test_linear_rewarmup_to_the_envelope_after_each_reset():
    for reset in (30, 60, 90):
        target = envelope(reset + 4)
        for i in range(5):
            got = restart_warmup_factor(reset + i, **ARGS, restart_every=30, restart_warmup_steps=5)
            assert got == pytest.approx((i + 1) / 5 * target), (reset, i)
    # The first step after a reset is the smallest; the ramp then joins the envelope.
    assert restart_warmup_factor(30, **ARGS, restart_every=30, restart_warmup_steps=5) < 0.25


def test_no_restarts_when_disabled():
    for step in range(100):
        assert restart_warmup_factor(
            step, **ARGS, restart_every=0, restart_warmup_steps=5
        ) == warmup_decay_factor(step, **ARGS)
        assert restart_warmup_factor(
            step, **ARGS, restart_every=30, restart_warmup_steps=0
        ) == warmup_decay_factor(step, **ARGS)
