"""The CUDA paths: skipped on a machine without a GPU, run by scripts/gpu_check.sh on one.

What only a GPU exercises: pinned host buffers with non-blocking copies and events (switch
indices, offloaded pools and their deferred write-backs), CUDA generators and RNG states in
checkpoints, Triton-compiled blocks, and float8 matmuls on tensor cores (compute capability
>= 8.9). Each test checks numbers, not just that the code runs: the library against the
plain-loop reference of tests/switchlora, bf16 and float8 against each other, a resumed run
against an uninterrupted one.

``SWITCHLORA_GPU_TESTS=cpu`` runs them on the CPU instead (a check of the tests themselves).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from parallel.distributed import init_distributed, shutdown
from parallel.float8 import float8_linears, has_float8_hardware
from switchlora import AdapterLinear
from tests.conftest import ROOT
from trainer.cli import parse_config
from trainer.train import build_trainer, train_step


def _device() -> torch.device | None:
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if os.environ.get("SWITCHLORA_GPU_TESTS") == "cpu":
        return torch.device("cpu")
    return None


DEVICE = _device()
pytestmark = pytest.mark.skipif(
    DEVICE is None, reason="needs a CUDA device (SWITCHLORA_GPU_TESTS=cpu runs these on the CPU)"
)

sys.path.insert(0, str(ROOT / "tests" / "switchlora"))


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """fp32 matmuls without TF32, so that fp32 comparisons hold to 1e-5."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize(
    "case",
    [
        "pool-sequential-writeback-N2",
        "pool-offload-cpu",  # pinned pools, deferred write-backs through pinned staging
        "pool-offload-cpu-random",  # and same-step returns that cannot wait
        "seeded-N2",
    ],
)
def test_library_matches_reference_on_device(case):
    from test_switchlora_reference import compare_with_reference

    compare_with_reference(case, DEVICE)


def _cfg(*flags: str):
    return parse_config(
        [
            "--config",
            str(ROOT / "configs/tiny_switch.toml"),
            "--training.seq_len",
            "64",
            "--training.global_batch_size",
            "8",
            "--switchlora.interval0",
            "16",
            "--switchlora.fixed_interval",
            "True",
            "--optimizer.lr",
            "3e-3",
            "--lr_schedule.warmup_steps",
            "5",
            *flags,
        ]
    )


def _train(steps: int, *flags: str, stance_after: int | None = None):
    """Losses of `steps` training steps on the trainer's device (one process)."""
    cfg = _cfg("--training.steps", str(steps), *flags)
    info = init_distributed()
    try:
        assert info.device.type == DEVICE.type
        tr = build_trainer(cfg, info)
        it = iter(tr.data.train)
        losses, switched = [], 0.0
        for step in range(steps):
            if stance_after is not None and step == stance_after:
                torch.compiler.set_stance("fail_on_recompile")
            out = train_step(tr, [next(it)])
            losses.append(out.loss)
            switched += out.metrics["switch/vectors_switched"]
        return losses, switched, tr
    finally:
        torch.compiler.set_stance("default")
        shutdown()


def test_compiled_bf16_switchlora_trains_without_recompiles():
    """bf16 compute (tiny_switch.toml has no precision section: fp32 unless set here)."""
    torch._dynamo.reset()
    losses, switched, tr = _train(
        30, "--compile.enable", "True", "--precision.mode", "bf16", stance_after=3
    )
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < losses[0] - 1.0
    assert switched == 30 * 28 * 2 * 2  # r / interval0 = 2 A rows and 2 B columns everywhere
    pools = [g.pool_a for g in tr.method.stateful["switch"].groups]
    assert all(p is not None and p.device == tr.info.device for p in pools)


def test_offloaded_pools_are_pinned_and_train_like_resident_ones():
    resident, _, _ = _train(12)
    offloaded, _, tr = _train(12, "--switchlora.pool_offload_cpu", "True")
    for group in tr.method.stateful["switch"].groups:
        assert group.pool_a.device.type == "cpu" and group.pool_b.device.type == "cpu"
        if DEVICE.type == "cuda":  # exact-size registered memory, not the caching allocator
            assert group.pool_a.is_pinned() and group.pool_b.is_pinned()
            assert group.pool_a.untyped_storage().nbytes() == group.pool_a.nbytes
    if DEVICE.type == "cuda":  # batches come pinned: the trainer's copies are asynchronous
        batch = next(iter(tr.data.train))
        assert batch["input"].is_pinned() and batch["target"].is_pinned()
    assert offloaded == pytest.approx(resident, rel=1e-5)


def test_float8_trains_like_bf16():
    torch._dynamo.reset()
    bf16, _, _ = _train(20, "--precision.mode", "bf16", "--compile.enable", "True")
    fp8, _, tr = _train(
        20,
        "--precision.mode",
        "float8",
        "--precision.float8_all_gather",
        "True",
        "--compile.enable",
        "True",
    )
    converted = float8_linears(tr.model)
    adapters = [n for n, m in tr.model.named_modules() if isinstance(m, AdapterLinear)]
    assert set(converted) == {f"{n}.base" for n in adapters}
    assert all(
        m.config.emulate == (not has_float8_hardware(tr.info.device)) for m in converted.values()
    )
    assert max(abs(a - b) for a, b in zip(bf16, fp8)) < 0.05
    assert abs(bf16[-1] - fp8[-1]) / bf16[-1] < 0.01


def test_resume_on_device_continues_like_an_uninterrupted_run(tmp_path):
    """Kill after the step-4 checkpoint, resume: steps 5..8 as in one uninterrupted run
    (CUDA RNG states and pinned pools go through the checkpoint)."""
    from tests.checkpoint.conftest import HALF, STEPS, SWITCH, check_ok, launch, train_losses
    from trainer.checkpoint.faults import KILL_AFTER_CHECKPOINT

    env = {} if DEVICE.type == "cuda" else {"CUDA_VISIBLE_DEVICES": ""}
    flags = [*SWITCH, "--switchlora.pool_offload_cpu", "True", "--checkpoint.interval", str(HALF)]
    whole = tmp_path / "whole"
    check_ok(launch([*flags, "--job.dump_folder", str(whole)], nproc=1, env=env))
    killed = tmp_path / "killed"
    args = [*flags, "--job.dump_folder", str(killed)]
    assert launch(args, nproc=1, env={**env, KILL_AFTER_CHECKPOINT: str(HALF)}).returncode != 0
    out = check_ok(launch(args, nproc=1, env=env))
    assert f"(step {HALF}" in out
    ref, got = train_losses(whole), train_losses(killed)
    for step in range(HALF + 1, STEPS + 1):
        assert got[step] == pytest.approx(ref[step], rel=1e-6), step
