"""Per-block fullgraph compile: same losses as eager, and no recompiles after warm-up."""

from __future__ import annotations

import math

import pytest
import torch

from parallel.distributed import init_distributed, shutdown
from tests.conftest import ROOT
from trainer.cli import parse_config
from trainer.train import build_trainer, train_step


def _losses(compile_: bool, steps: int, stance_after: int | None) -> list[float]:
    cfg = parse_config(
        [
            "--config",
            str(ROOT / "configs/tiny_full.toml"),
            "--model.flavor",
            "debug",
            "--training.seq_len",
            "64",
            "--training.global_batch_size",
            "4",
            "--training.steps",
            str(steps),
            "--compile.enable",
            str(compile_),
        ]
    )
    info = init_distributed()
    try:
        tr = build_trainer(cfg, info)
        it = iter(tr.data.train)
        losses = []
        for step in range(steps):
            if stance_after is not None and step == stance_after:
                torch.compiler.set_stance("fail_on_recompile")
            losses.append(train_step(tr, [next(it)]).loss)
        return losses
    finally:
        torch.compiler.set_stance("default")
        shutdown()


def test_compiled_blocks_match_eager_without_recompiles():
    torch._dynamo.reset()
    eager = _losses(False, 6, None)
    compiled = _losses(True, 6, stance_after=2)
    assert compiled == pytest.approx(eager, rel=1e-4)


def test_compiled_switchlora_50_steps_without_recompiles():
    """Compiled blocks while switching; k varies step to step; no recompile after warm-up.

    The switch writes the parameters in place between steps, outside any graph: the blocks
    must never recompile because of it."""
    torch._dynamo.reset()
    cfg = parse_config(
        [
            "--config",
            str(ROOT / "configs/tiny_switch.toml"),
            "--model.flavor",
            "debug",
            "--training.seq_len",
            "32",
            "--training.global_batch_size",
            "2",
            "--training.steps",
            "50",
            "--compile.enable",
            "True",
            "--method.rank",
            "8",
            "--method.interval0",
            "3",
            "--method.freeze_steps",
            "1",
            "--method.fixed_interval",
            "True",
        ]
    )
    info = init_distributed()
    try:
        tr = build_trainer(cfg, info)
        it = iter(tr.data.train)
        switched = []
        for step in range(50):
            if step == 3:
                torch.compiler.set_stance("fail_on_recompile")
            out = train_step(tr, [next(it)])
            switched.append(out.metrics["switch/vectors_switched"])
        assert math.isfinite(out.loss) and not out.skipped
        # 14 adapted layers, r/interval = 8/3 vectors per factor: k is 2 or 3 in each layer.
        assert len(set(switched)) > 3 and min(switched) > 0
    finally:
        torch.compiler.set_stance("default")
        shutdown()
