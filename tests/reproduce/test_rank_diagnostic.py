"""The effective-rank diagnostic on updates of known rank, and on a real model's layers."""

from __future__ import annotations

import math

import pytest
import torch

from switchlora.diagnostics import (
    accumulated_update,
    energy_rank,
    entropy_rank,
    numerical_rank,
    stable_rank,
    summarize,
)
from trainer.config import JobConfig
from trainer.diagnostics.rank import mean_fractions, rank_diagnostic
from trainer.methods import init_method_weights, prepare_model
from trainer.model.args import resolve_model_args
from trainer.model.init import init_dense_weights
from trainer.model.llama import Llama


def known_rank_matrix(m: int, n: int, sigmas: list[float], seed: int = 0) -> torch.Tensor:
    """U diag(sigmas) V^T with orthonormal U [m, k], V [n, k]: rank len(sigmas)."""
    gen = torch.Generator().manual_seed(seed)
    k = len(sigmas)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return (u * torch.tensor(sigmas, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("k", [1, 3, 7])
def test_equal_singular_values_give_rank_k_in_every_measure(k):
    update = known_rank_matrix(40, 24, [0.5] * k).float()
    summary, sv = summarize(update)
    assert summary.numerical_rank == k
    assert summary.energy_rank == k  # 0.9 of the energy needs all k equal values
    assert summary.entropy_rank == pytest.approx(k, rel=1e-4)
    assert summary.stable_rank == pytest.approx(k, rel=1e-4)
    assert summary.max_rank == 24 and summary.shape == (40, 24)
    assert summary.frobenius == pytest.approx(0.5 * math.sqrt(k), rel=1e-4)
    assert sv.shape == (24,) and torch.all(sv[:-1] >= sv[1:])


def test_unequal_spectrum_measures():
    sigmas = [8.0, 4.0, 2.0, 1.0, 1e-6]
    sv = torch.tensor(sigmas)
    assert numerical_rank(sv) == 4  # 1e-6 / 8 is below the default rtol 1e-3
    assert numerical_rank(sv, rtol=1e-8) == 5
    power = [s * s for s in sigmas]  # 64, 16, 4, 1: 64/85 < 0.9 <= 80/85
    assert sum(power[:2]) / sum(power) >= 0.9 > power[0] / sum(power)
    assert energy_rank(sv) == 2
    assert stable_rank(sv) == pytest.approx(sum(power) / 64.0)
    p = torch.tensor(sigmas, dtype=torch.float64) / sum(sigmas)
    assert entropy_rank(sv) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-5)


def test_zero_update_has_rank_zero():
    summary, _ = summarize(torch.zeros(16, 8))
    assert summary.numerical_rank == summary.energy_rank == 0
    assert summary.entropy_rank == summary.stable_rank == summary.frobenius == 0.0


def test_accumulated_update_of_a_switched_adapter_layer():
    """W0 = W_init - s B0 A0; rank-1 switch corrections folded into W; A, B trained."""
    torch.manual_seed(0)
    m, n, r, s = 48, 32, 4, 0.25
    w_init = 0.02 * torch.randn(m, n)
    a0, b0 = torch.randn(r, n), torch.randn(m, r)
    w = w_init - s * b0 @ a0
    assert accumulated_update(w, w_init, a0, b0, s).abs().max() < 1e-5  # zero at step 0
    # Three switches of A rows: W += s * b_i (a_i - c)^T, a_i <- c. The layer's function, and
    # so the accumulated update, is unchanged by a switch.
    a, b = a0.clone(), b0.clone()
    for i in range(3):
        c = torch.randn(n)
        w = w + s * torch.outer(b[:, i], a[i] - c)
        a[i] = c
    assert accumulated_update(w, w_init, a, b, s).abs().max() < 1e-4
    # Training between switches moves A and B: every step adds at most rank 2r.
    a_trained = a + 0.1 * torch.randn(r, n)
    update = accumulated_update(w, w_init, a_trained, b, s)
    expected = s * b @ (a_trained - a)  # rank <= r
    torch.testing.assert_close(update, expected, atol=1e-5, rtol=1e-4)
    assert summarize(update)[0].numerical_rank == r
    # A known rank-5 change of the effective weight.
    delta = known_rank_matrix(m, n, [1.0, 0.8, 0.6, 0.4, 0.2]).float()
    assert summarize(accumulated_update(w + delta, w_init, a, b, s))[0].numerical_rank == 5


def _built_model(method: str, rank: int = 4) -> tuple[Llama, JobConfig]:
    """A debug model initialised like the trainer does (no process group, no sharding)."""
    cfg = JobConfig()
    cfg.method.name = method
    cfg.method.rank = rank
    cfg.job.seed = 3
    args = resolve_model_args("debug", vocab_size=64, max_seq_len=16)
    with torch.device("meta"):
        model = Llama(args)
    prepare_model(model, cfg)
    model.to_empty(device="cpu")
    init_dense_weights(model, cfg.job.seed, cfg.model.init_std)
    init_method_weights(model, cfg)
    return model, cfg


@pytest.mark.parametrize("method", ["full", "lora", "switchlora", "relora"])
def test_model_update_is_zero_at_init_and_sees_a_known_change(method):
    """W_init recomputed from the keyed init matches the trainer's init exactly."""
    model, cfg = _built_model(method)
    at_init = rank_diagnostic(model, cfg, is_main=True)
    assert len(at_init) == 2 * 7  # debug: 2 blocks x 7 projections
    for name, (summary, _) in at_init.items():
        assert summary.frobenius < 1e-5, name
    layer_name = "layers.1.mlp.down_proj"
    layer = model.get_submodule(layer_name)
    with torch.no_grad():
        if method == "full":
            m, n = layer.weight.shape
            layer.weight += known_rank_matrix(m, n, [1.0, 0.5], seed=1).float()
            expected = 2
        else:
            layer.lora_B[:, 0] += 1.0  # one column of B: a rank-1 change of s*B*A
            expected = 1
    after = rank_diagnostic(model, cfg, is_main=True)
    for name, (summary, _) in after.items():
        if name == layer_name:
            assert summary.numerical_rank == expected
        else:  # only fp32 rounding of W0 = W_init - s*B0*A0: numerically zero
            assert summary.frobenius < 1e-5, name


def test_off_main_ranks_compute_nothing():
    model, cfg = _built_model("lora")
    assert rank_diagnostic(model, cfg, is_main=False) == {}


def test_mean_fractions_average_rank_over_full_rank():
    full, _ = summarize(known_rank_matrix(20, 10, [1.0] * 10).float())
    half, _ = summarize(known_rank_matrix(30, 20, [1.0] * 10).float())
    fractions = mean_fractions({"a": full, "b": half})
    assert fractions["numerical_rank_frac"] == pytest.approx(0.75)
    assert fractions["entropy_rank_frac"] == pytest.approx(0.75, rel=1e-4)
    assert mean_fractions({}) == {}
