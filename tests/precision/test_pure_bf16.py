"""precision.mode = "pure_bf16": every stored tensor in bf16 (step counts fp32), and it trains."""

from __future__ import annotations

import math

import pytest
import torch

from parallel.distributed import init_distributed, shutdown
from tests.conftest import ROOT
from trainer.cli import parse_config
from trainer.config import ConfigError
from trainer.config_checks import check_config
from trainer.train import build_trainer, train_step

TINY = [
    "--config", str(ROOT / "configs/tiny_switch.toml"),
    "--training.seq_len", "64",
    "--training.global_batch_size", "8",
    "--training.steps", "40",
    "--lr_schedule.warmup_steps", "10",
    "--checkpoint.enable", "False",
    "--metrics.tensorboard", "False",
    "--precision.mode", "pure_bf16",
]  # fmt: skip
SWITCH_EVERY_STEP = ["--switchlora.interval0", "10", "--switchlora.fixed_interval", "True"]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _stored_tensors(tr) -> dict[str, torch.Tensor]:
    """Parameters, optimizer state and candidate pools, by a readable name."""
    out = {f"param {n}": _local(p) for n, p in tr.model.named_parameters()}
    names = {id(p): n for n, p in tr.model.named_parameters()}
    for p, state in tr.method.optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"optimizer {names[id(p)]} {key}"] = _local(value)
    controller = tr.method.stateful.get("switch")
    if controller is not None:
        for i, group in enumerate(controller.groups):
            out[f"pool_a {i}"] = group.pool_a
            out[f"pool_b {i}"] = group.pool_b
    return out


@pytest.mark.parametrize("method", ["switchlora", "full", "galore"])
def test_every_stored_tensor_is_bf16_and_step_counts_fp32(tmp_path, method):
    args = [*TINY, *SWITCH_EVERY_STEP, "--method.name", method, "--job.dump_folder", str(tmp_path)]
    info = init_distributed()
    try:
        tr = build_trainer(parse_config(args), info)
        batches = iter(tr.data.train)
        switched = 0.0
        for _ in range(3):  # optimizer state exists and vectors have been switched
            out = train_step(tr, [next(batches)])
            switched += out.metrics.get("switch/vectors_switched", 0.0)
        tensors = _stored_tensors(tr)
        assert any("base.weight" in k for k in tensors) == (method == "switchlora")
        if method == "switchlora":
            assert switched > 0 and any(k.startswith("pool_a") for k in tensors)
        moments = [k for k in tensors if k.endswith(("exp_avg", "exp_avg_sq"))]
        assert moments, "no optimizer moments found"
        for name, t in tensors.items():
            if name.endswith(" step"):
                assert t.dtype == torch.float32, name
            elif name.startswith("optimizer") and t.dtype in (torch.int64, torch.int32):
                continue
            else:
                assert t.dtype == torch.bfloat16, (name, t.dtype)
        # Gradients are bf16 too (nothing is kept in fp32 for the reduction).
        forward = tr.model(next(batches)["input"])
        forward.float().sum().backward()
        grads = [p.grad for p in tr.model.parameters() if p.grad is not None]
        assert grads and all(_local(g).dtype == torch.bfloat16 for g in grads)
    finally:
        shutdown()


def test_tiny_config_trains_in_pure_bf16(tmp_path):
    short = [
        "--training.steps",
        "20",
        "--training.seq_len",
        "32",
        "--lr_schedule.warmup_steps",
        "5",
    ]
    cfg = parse_config([*TINY, *short, "--job.dump_folder", str(tmp_path)])
    info = init_distributed()
    try:
        tr = build_trainer(cfg, info)
        batches = iter(tr.data.train)
        losses = [train_step(tr, [next(batches)]).loss for _ in range(cfg.training.steps)]
    finally:
        shutdown()
    assert all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)


def test_float8_all_gather_needs_float8_mode():
    cfg = parse_config([*TINY])
    cfg.precision.float8_all_gather = True
    with pytest.raises(ConfigError, match="float8_all_gather: needs precision.mode = 'float8'"):
        check_config(cfg, 1)
