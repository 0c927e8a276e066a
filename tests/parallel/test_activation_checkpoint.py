"""Activation checkpointing: the same losses as none (fp32), and the recomputation it promises.

Losses of 4 training steps (the trainer's build and step) with full, every-2nd-block and
op-level selective checkpointing equal those without checkpointing within 1e-6. Which ops
run again in backward is counted with a dispatch mode on a plain model: none recomputes
nothing; full recomputes every block's matmuls; every 2nd block of 2 half of them; op-level
recomputes the pointwise ops (SiLU) but no matmul and no attention.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from parallel.activation_checkpoint import apply_activation_checkpointing, checkpointed_blocks
from parallel.distributed import init_distributed, shutdown
from tests.conftest import ROOT
from trainer.cli import parse_config
from trainer.config import ConfigError
from trainer.config_checks import check_config
from trainer.model.args import resolve_model_args
from trainer.model.llama import Llama
from trainer.train import build_trainer, train_step

MODES = {
    "none": ("none", "op"),
    "full": ("full", "op"),
    "every2": ("selective", "2"),
    "op": ("selective", "op"),
}


def _config(mode: str, option: str, steps: int = 4):
    return parse_config(
        [
            "--config", str(ROOT / "configs/tiny_full.toml"),
            "--model.flavor", "debug",
            "--training.seq_len", "64",
            "--training.global_batch_size", "4",
            "--training.steps", str(steps),
            "--lr_schedule.warmup_steps", "1",
            "--activation_checkpoint.mode", mode,
            "--activation_checkpoint.selective_ac_option", option,
        ]
    )  # fmt: skip


def _losses(mode: str, option: str, steps: int = 4) -> list[float]:
    cfg = _config(mode, option, steps)
    info = init_distributed()
    try:
        tr = build_trainer(cfg, info)
        it = iter(tr.data.train)
        return [train_step(tr, [next(it)]).loss for _ in range(steps)]
    finally:
        shutdown()


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("name", ["full", "every2", "op"])
def test_checkpointing_gives_the_losses_of_none(name):
    reference = _losses(*MODES["none"])
    got = _losses(*MODES[name])
    assert got == pytest.approx(reference, rel=0, abs=1e-6)


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _backward_ops(mode: str, option: str) -> Counter:
    """Aten ops run by backward of a 2-block fp32 model under ``mode`` / ``option``."""
    torch.manual_seed(0)
    args = resolve_model_args("debug", vocab_size=64, max_seq_len=16)
    model = Llama(args)
    model.reset_rope()
    apply_activation_checkpointing(model, mode, option)
    tokens = torch.randint(0, 64, (2, 16))
    loss = model(tokens).float().square().mean()
    with OpCounter() as counter:
        loss.backward()
    return counter.counts


def test_recomputed_ops_follow_the_mode():
    ops = {name: _backward_ops(*mode) for name, mode in MODES.items()}
    # q, k, v, o, gate, up of each of 2 blocks; down_proj's output is saved by nothing, so
    # the recomputation stops before it (non-reentrant checkpoint's early stop).
    linears = 6 * 2
    # Forward matmuls run again in backward: all blocks (full), one of two (every2), none.
    assert ops["full"]["mm"] - ops["none"]["mm"] == linears
    assert ops["every2"]["mm"] - ops["none"]["mm"] == linears // 2
    assert ops["op"]["mm"] == ops["none"]["mm"]
    # Op-level: the pointwise forward ops are recomputed, attention is not.
    assert ops["none"]["silu"] == 0
    assert ops["op"]["silu"] == ops["full"]["silu"] == 2
    attention = [
        k for k in ops["full"] if k.startswith("_scaled_dot_product") and "backward" not in k
    ]
    assert attention and all(ops["op"][k] == ops["none"][k] for k in attention)
    assert all(ops["full"][k] > ops["none"][k] for k in attention)


def test_every_kth_block_and_bad_options():
    assert checkpointed_blocks(6, "selective", "2") == [1, 3, 5]
    assert checkpointed_blocks(6, "selective", "3") == [2, 5]
    assert checkpointed_blocks(3, "selective", "op") == [0, 1, 2]
    assert checkpointed_blocks(3, "full", "7") == [0, 1, 2]
    assert checkpointed_blocks(3, "none", "op") == []
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match="selective_ac_option"):
            check_config(_config("selective", bad), 1)
