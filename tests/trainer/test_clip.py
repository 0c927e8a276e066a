"""Gradient clipping against ``torch.nn.utils.clip_grad_norm_`` on the same gradients."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.conftest import ROOT, run_torchrun
from trainer.optim import clip_grads_, grad_norm


def params_with_grads(seed: int) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(s, generator=gen)) for s in ((7, 6), (4, 10), (5,))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 3
    params.append(nn.Parameter(torch.randn(3)))  # no gradient: left out of the norm
    return params


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_matches_torch_one_process(max_norm):
    ours, ref = params_with_grads(0), params_with_grads(0)
    norm = grad_norm(ours)
    clip_grads_(ours, max_norm, norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    torch.testing.assert_close(norm, ref_norm, rtol=0, atol=1e-6)
    for a, b in zip(ours, ref):
        if b.grad is None:
            assert a.grad is None
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)
    scale = ours[0].grad.norm() / params_with_grads(0)[0].grad.norm()
    assert scale.item() == pytest.approx(min(1.0, max_norm / norm.item()), rel=1e-5)


def test_zero_max_norm_leaves_gradients_and_reports_the_norm():
    ours = params_with_grads(0)
    norm = grad_norm(ours)
    clip_grads_(ours, 0.0, norm)
    for a, b in zip(ours, params_with_grads(0)):
        if b.grad is not None:
            assert torch.equal(a.grad, b.grad)
    expected = torch.cat([p.grad.flatten() for p in params_with_grads(0)[:3]]).norm()
    torch.testing.assert_close(norm, expected)


@pytest.mark.slow
def test_clip_matches_torch_on_fsdp2_shards(tmp_path):
    out = tmp_path / "clip.jsonl"
    run_torchrun(ROOT / "tests/trainer/clip_worker.py", [str(out)], nproc=2)
    cases = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(cases) == 6
    for case in cases:
        assert case["norm"] == pytest.approx(case["ref_norm"], rel=1e-6), case
        assert case["max_grad_error"] < 1e-6, case
        expected_scale = min(1.0, case["max_norm"] / case["norm"]) if case["max_norm"] else 1.0
        assert case["grad_scale"] == pytest.approx(expected_scale, rel=1e-5), case
    shard = next(c for c in cases if c["layout"] == "shard")
    assert shard["local_shapes"] == [[4, 6], [4, 5], [3]]  # really sharded, rows and columns
    assert any(c["grad_scale"] < 0.2 for c in cases)  # the clip binds in some cases
