"""Init formulas (spec section 1): variances, bounds, effective init, pools."""

import math

import numpy as np
import pytest
import torch
from switchlora_testkit import options

from switchlora.init import (
    init_adapter_layer_full,
    init_bounds,
    initial_pool_indices,
    switchlora_sigmas,
)


def test_bounds_match_spec_examples():
    a, b = init_bounds(1024, 1024, 256, "switchlora")
    assert a == pytest.approx(0.93, abs=0.005) and b == pytest.approx(0.93, abs=0.005)
    a, b = init_bounds(2736, 1024, 256, "switchlora")  # gate/up
    assert a == pytest.approx(1.05, abs=0.005) and b == pytest.approx(0.82, abs=0.005)
    a, b = init_bounds(1024, 2736, 256, "switchlora")  # down
    assert a == pytest.approx(0.64, abs=0.005) and b == pytest.approx(0.82, abs=0.005)
    assert init_bounds(100, 64, 8, "lora") == (pytest.approx(1 / 8), 0.0)


@pytest.mark.parametrize(("m", "n", "r"), [(96, 64, 16), (64, 160, 8)])
def test_product_variance_is_default_linear_init(m, n, r):
    sigma_a, sigma_b = switchlora_sigmas(m, n, r)
    assert sigma_a**2 * sigma_b**2 / r == pytest.approx(1 / (3 * n))
    opts = options(rank=r, switching=False)
    samples = []
    for layer_index in range(40):
        full = init_adapter_layer_full(m, n, opts, layer_index, torch.zeros(m, n))
        samples.append((full["B0"] @ full["A0"] * opts.scale).flatten())
    var = torch.cat(samples).var().item()
    # 40 * m * n samples of a product of r terms: a few percent statistical error.
    assert var == pytest.approx(1 / (3 * n), rel=0.05)


def test_effective_init_equals_w_init():
    opts = options()
    w_init = torch.randn(48, 33, generator=torch.Generator().manual_seed(0)) * 0.02
    full = init_adapter_layer_full(48, 33, opts, 5, w_init)
    effective = full["W0"] + opts.scale * full["B0"] @ full["A0"]
    torch.testing.assert_close(effective, w_init, rtol=0, atol=4 * torch.finfo(torch.float32).eps)
    assert not torch.equal(full["W0"], w_init)


def test_pool_layout_and_determinism():
    opts = options()
    m, n, r = 48, 32, opts.rank
    full = init_adapter_layer_full(m, n, opts, 2, torch.zeros(m, n))
    c = min(m, n)
    assert full["pool_A"].shape == (c, n) and full["pool_B"].shape == (c, m)
    use_a, use_b = initial_pool_indices(c, r)
    torch.testing.assert_close(full["A0"], full["pool_A"][use_a], rtol=0, atol=0)
    torch.testing.assert_close(full["B0"], full["pool_B"][use_b].T, rtol=0, atol=0)
    # the B position at the pointer r//2 holds entry C - r, the one before it entry C - 1
    assert use_b[r // 2] == c - r and use_b[r // 2 - 1] == c - 1
    assert np.array_equal(use_a, np.arange(c - r, c))
    again = init_adapter_layer_full(m, n, opts, 2, torch.zeros(m, n))
    for key in full:
        assert torch.equal(full[key], again[key])
    other = init_adapter_layer_full(m, n, opts, 3, torch.zeros(m, n))
    assert not torch.equal(full["A0"], other["A0"])
    bound_a, bound_b = init_bounds(m, n, r, "switchlora")
    assert full["pool_A"].abs().max() <= bound_a and full["pool_B"].abs().max() <= bound_b
    assert full["pool_A"].abs().max() > 0.9 * bound_a


def test_lora_init_and_no_pools_without_switching():
    w_init = torch.randn(33, 32) * 0.02
    full = init_adapter_layer_full(33, 32, options(init="lora"), 0, w_init)
    assert torch.count_nonzero(full["B0"]) == 0 and torch.count_nonzero(full["pool_B"]) == 0
    assert full["A0"].abs().max() <= 1 / math.sqrt(32)
    assert torch.equal(full["W0"], w_init)
    plain = init_adapter_layer_full(33, 32, options(switching=False), 0, w_init)
    assert "pool_A" not in plain and "pool_A" not in init_adapter_layer_full(
        33, 32, options(candidate_source="seeded"), 0, w_init
    )
