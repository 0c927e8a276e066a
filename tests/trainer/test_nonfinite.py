"""A step whose loss or gradient norm is not finite is skipped and changes nothing."""

from __future__ import annotations

import subprocess

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from parallel.distributed import init_distributed, shutdown
from tests.conftest import ROOT, launch_env, train_command
from trainer.cli import parse_config
from trainer.train import build_trainer, train_step

COMMON = [
    "--config", str(ROOT / "configs/tiny_full.toml"),
    "--model.flavor", "debug",
    "--training.seq_len", "32",
    "--training.global_batch_size", "4",
    "--training.steps", "20",
    "--lr_schedule.warmup_steps", "2",
    "--method.rank", "8",
    "--checkpoint.enable", "False",
    "--metrics.tensorboard", "False",
]  # fmt: skip
K = 3
"""0-based index of the step that gets a non-finite gradient."""
METHODS = {
    # Every step switches vectors (interval 3 over rank 8).
    "switchlora": ["--method.name", "switchlora", "--switchlora.interval0", "3",
                   "--switchlora.freeze_steps", "1", "--switchlora.fixed_interval", "True"],
    # A reset (merge, re-draw, prune) is due right after step K.
    "relora": ["--method.name", "relora", "--relora.interval", str(K + 1),
               "--relora.restart_warmup_steps", "1"],
    # A projector refresh is due at step K.
    "galore": ["--method.name", "galore", "--galore.update_interval", str(K)],
    "full": [],
}  # fmt: skip


class NanGradient(torch.autograd.Function):
    """Identity forward; NaN gradient backward: the loss stays finite, the gradients do not."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def snapshot(tr) -> dict:
    """Everything a step may change, as plain cloned tensors and values."""

    def plain(value):
        if isinstance(value, torch.Tensor):
            value = value.full_tensor() if hasattr(value, "full_tensor") else value
            return value.detach().clone()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {
        "params": plain(dict(tr.model.named_parameters())),
        "optimizer": plain(tr.method.optimizer.state_dict()),
        "method": {name: plain(obj.state_dict()) for name, obj in tr.method.stateful.items()},
        "scheduler": plain(tr.scheduler.state_dict()),
        "lr": tr.scheduler.get_last_lr(),
        "step": tr.step,
    }


def assert_same(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("where", ["gradient", "loss"])
def test_nonfinite_step_changes_nothing(tmp_path, method, where):
    cfg = parse_config([*COMMON, *METHODS[method], "--job.dump_folder", str(tmp_path)])
    info = init_distributed()
    try:
        tr = build_trainer(cfg, info)
        batches = iter(tr.data.train)
        for _ in range(K):
            assert not train_step(tr, [next(batches)]).skipped
        before = snapshot(tr)
        if where == "gradient":
            hook = tr.model.layers["0"].register_forward_hook(
                lambda mod, args, out: NanGradient.apply(out)
            )
        else:
            hook = tr.model.lm_head.register_forward_hook(lambda mod, args, out: out * float("inf"))
        out = train_step(tr, [next(batches)])
        hook.remove()
        assert out.skipped and out.metrics == {}
        if where == "gradient":
            assert torch.isfinite(torch.tensor(out.loss)) and not torch.isfinite(
                torch.tensor(out.grad_norm)
            )
        assert all(p.grad is None for p in tr.model.parameters())
        assert_same(before, snapshot(tr))
        # Training continues, and the step skipped is taken in full (switch, reset, refresh).
        out = train_step(tr, [next(batches)])
        assert not out.skipped and tr.step == K + 1
        after = snapshot(tr)
        if method == "switchlora":
            assert out.metrics["switch/vectors_switched"] > 0
        if method == "relora":
            assert after["method"]["relora"]["resets"] == before["method"]["relora"]["resets"] + 1
        if method == "galore":
            assert out.metrics["galore/projector_updates"] == 2
        assert not torch.equal(
            after["params"]["lm_head.weight"], before["params"]["lm_head.weight"]
        )
    finally:
        shutdown()


def checkpoint_tensors(folder) -> dict[str, torch.Tensor]:
    """Every tensor of a DCP checkpoint folder, read back as plain tensors."""
    metadata = FileSystemReader(folder).read_metadata()
    state = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if isinstance(meta, TensorStorageMetadata)
    }
    dcp.load(state, storage_reader=FileSystemReader(folder), no_dist=True)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_consecutive_nonfinite_steps_stop_the_run(tmp_path, nproc):
    dump = tmp_path / "run"
    args = [
        *COMMON, *METHODS["switchlora"],
        "--checkpoint.enable", "True", "--checkpoint.interval", "2",
        "--checkpoint.keep_latest", "10", "--training.max_skipped_steps", "2",
        "--metrics.log_every", "1", "--job.dump_folder", str(dump),
    ]  # fmt: skip
    # Call 4 is a lone non-finite step (skipped, then retried); from call 8 on every step is.
    script = ROOT / "tests/trainer/nonfinite_run.py"
    cmd = [*train_command(script, nproc), "4,8+", "--", *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=launch_env(), cwd=ROOT
    )
    assert proc.returncode != 0
    out = proc.stdout
    assert "step 4: skipped" in out and "1 in a row, 1 in all" in out
    # Calls 1-3 and 5-7 are steps 1-6; calls 8, 9, 10 are step 7: skipped twice, then stop.
    assert "step 7: skipped" in out and "2 in a row, 3 in all" in out
    stop = [line for line in proc.stderr.splitlines() if "consecutive steps" in line]
    assert len(stop) == nproc, proc.stderr[-3000:]
    assert stop[0].startswith("training stopped: stopping at step 7: 3 consecutive steps")
    if nproc == 1:
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    saved = sorted((dump / "checkpoints").glob("step-*"))
    assert [p.name for p in saved] == ["step-2", "step-4", "step-6"]
    for folder in saved:
        for key, tensor in checkpoint_tensors(folder).items():
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), (folder.name, key)
    assert not (dump / "summary.json").exists()
