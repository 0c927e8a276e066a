"""Costs counted from meta-device shapes equal the live optimizer state after a real step."""

from __future__ import annotations

import pytest
import torch

from trainer.config import JobConfig
from trainer.methods import build_runtime, init_method_weights, prepare_model
from trainer.model.init import init_dense_weights
from trainer.model.llama import Llama
from trainer.reproduce.costs import model_args_of, run_costs

VOCAB = 257


def _cfg(method: str, **switchlora_fields) -> JobConfig:
    cfg = JobConfig()
    cfg.model.flavor = "debug"
    cfg.training.seq_len = 16
    cfg.method.name = method
    cfg.method.rank = 8
    cfg.galore.update_interval = 5
    for key, value in switchlora_fields.items():
        setattr(cfg.switchlora, key, value)
    return cfg


def _live_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor)
    )


@pytest.mark.parametrize(
    "method, fields",
    [
        ("full", {}),
        ("lora", {}),
        ("switchlora", {}),
        ("switchlora", {"candidate_source": "seeded"}),
        ("relora", {}),
        ("galore", {}),
    ],
)
def test_counted_costs_match_a_live_step(method, fields):
    cfg = _cfg(method, **fields)
    costs = run_costs(cfg, VOCAB)
    with torch.device("meta"):
        model = Llama(model_args_of(cfg, VOCAB))
    prepare_model(model, cfg)
    model.to_empty(device="cpu")
    init_dense_weights(model, cfg.job.seed, cfg.model.init_std)
    init_method_weights(model, cfg)
    runtime = build_runtime(model, cfg, torch.device("cpu"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = torch.randn_like(p)
    runtime.before_optimizer_step(0)
    runtime.optimizer.step()
    assert costs.params == sum(p.numel() for p in model.parameters())
    assert costs.trainable_params == sum(p.numel() for p in trainable)
    assert costs.grad_bytes_per_step == sum(p.grad.numel() * 4 for p in trainable)
    assert costs.optimizer_state_bytes == _live_state_bytes(runtime.optimizer)
    controller = runtime.stateful.get("switch")
    assert costs.pool_bytes == (controller.pool_bytes() if controller else 0)
    if method == "switchlora" and not fields:
        assert costs.pool_bytes > 0


def test_low_rank_methods_keep_less_optimizer_state_than_full():
    full = run_costs(_cfg("full"), VOCAB)
    for method in ("lora", "switchlora", "relora", "galore"):
        costs = run_costs(_cfg(method), VOCAB)
        assert costs.optimizer_state_bytes < full.optimizer_state_bytes, method
    assert run_costs(_cfg("galore"), VOCAB).grad_bytes_per_step == full.grad_bytes_per_step
