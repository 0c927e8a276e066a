"""Warm-up + decay schedule against closed-form values."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.lr_schedule import build_scheduler, warmup_decay_factor


def test_warmup_then_cosine_to_floor():
    f = [warmup_decay_factor(s, 10, 110, "cosine", 0.1) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_decay_factor(110, 10, 110, "cosine", 0.1) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))


def test_linear_and_constant():
    assert warmup_decay_factor(55, 0, 100, "linear", 0.0) == pytest.approx(0.45)
    assert warmup_decay_factor(55, 0, 100, "constant", 0.0) == 1.0


def test_scheduler_drives_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = build_scheduler(opt, warmup_steps=4, total_steps=8, decay="cosine", min_lr_ratio=0.0)
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert seen[-1] < seen[4]
